package safetensors

import (
	"encoding/json"
	"math"
	"slices"
	"sort"
	"unicode/utf8"
)

// headerParser reads the JSON header of the format in one pass, without a
// generic JSON decoder: the header has one fixed shape (an object of tensor
// entries {"dtype", "shape", "data_offsets"} and an optional
// "__metadata__" object of strings), so every value goes straight into its
// typed field. A 16 MiB header of tiny entries (TestMaximalHeaderIsBounded)
// then costs about one Info per entry instead of the tens of bytes per
// token of a map-based decoder. It refuses what the format does not allow:
// leading garbage, duplicate keys at any level, unknown or missing entry
// fields, arrays longer than maxArrayLen, numbers that are not naturals,
// and anything after the closing brace except whitespace.
type headerParser struct {
	h   []byte
	pos int
	arr [maxArrayLen]uint64 // naturals' result, valid until the next call
}

func (p *headerParser) ws() {
	for p.pos < len(p.h) {
		switch p.h[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// expect consumes byte c after whitespace.
func (p *headerParser) expect(c byte) error {
	p.ws()
	if p.pos >= len(p.h) {
		return corrupt("header JSON ends early, expected %q", c)
	}
	if p.h[p.pos] != c {
		return corrupt("header JSON: %q at byte %d, expected %q", p.h[p.pos], p.pos, c)
	}
	p.pos++
	return nil
}

// peek returns the next byte after whitespace, or 0 at the end.
func (p *headerParser) peek() byte {
	p.ws()
	if p.pos >= len(p.h) {
		return 0
	}
	return p.h[p.pos]
}

// str reads a JSON string. Strings without escapes that are valid UTF-8
// are sliced directly; others go through encoding/json, which decodes the
// escapes (and replaces invalid UTF-8 as it always did).
func (p *headerParser) str() (string, error) {
	if err := p.expect('"'); err != nil {
		return "", err
	}
	start := p.pos - 1
	escaped := false
	for p.pos < len(p.h) {
		c := p.h[p.pos]
		switch {
		case c == '"':
			p.pos++
			raw := p.h[start+1 : p.pos-1]
			if !escaped && utf8.Valid(raw) {
				return string(raw), nil
			}
			var s string
			if err := json.Unmarshal(p.h[start:p.pos], &s); err != nil {
				return "", corrupt("header JSON string at byte %d: %w", start, err)
			}
			return s, nil
		case c == '\\':
			escaped = true
			p.pos += 2
			continue
		case c < 0x20:
			return "", corrupt("header JSON: control character in string at byte %d", p.pos)
		}
		p.pos++
	}
	return "", corrupt("header JSON: unterminated string at byte %d", start)
}

// natural reads a JSON number that is a natural number fitting in uint64.
func (p *headerParser) natural() (uint64, error) {
	p.ws()
	start := p.pos
	var v uint64
	for p.pos < len(p.h) && p.h[p.pos] >= '0' && p.h[p.pos] <= '9' {
		d := uint64(p.h[p.pos] - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, corrupt("header number at byte %d exceeds uint64", start)
		}
		v = v*10 + d
		p.pos++
	}
	n := p.pos - start
	if n == 0 || (n > 1 && p.h[start] == '0') {
		return 0, corrupt("header JSON: expected a natural number at byte %d", start)
	}
	if c := p.peek(); c != ',' && c != ']' {
		return 0, corrupt("header JSON: expected a natural number at byte %d", start)
	}
	return v, nil
}

// naturals reads an array of at most maxArrayLen naturals into p.arr and
// returns that part of it (never nil; valid until the next call).
func (p *headerParser) naturals() ([]uint64, error) {
	if err := p.expect('['); err != nil {
		return nil, err
	}
	out := p.arr[:0]
	if p.peek() == ']' {
		p.pos++
		return out, nil
	}
	for {
		if len(out) == maxArrayLen {
			return nil, corrupt("header array longer than %d elements", maxArrayLen)
		}
		v, err := p.natural()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		switch p.peek() {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return out, nil
		default:
			return nil, corrupt("header JSON: expected ',' or ']' at byte %d", p.pos)
		}
	}
}

// members calls f for each key of an object, with the parser placed at
// the key's value; duplicate keys are refused (by a map when dups is true;
// otherwise f must refuse them itself).
func (p *headerParser) members(dups bool, f func(key string) error) error {
	if err := p.expect('{'); err != nil {
		return err
	}
	if p.peek() == '}' {
		p.pos++
		return nil
	}
	var seen map[string]struct{}
	if dups {
		seen = map[string]struct{}{}
	}
	for {
		k, err := p.str()
		if err != nil {
			return err
		}
		if dups {
			if _, dup := seen[k]; dup {
				return corrupt("duplicate key %q in header", k)
			}
			seen[k] = struct{}{}
		}
		if err := p.expect(':'); err != nil {
			return err
		}
		if err := f(k); err != nil {
			return err
		}
		switch p.peek() {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return nil
		default:
			return corrupt("header JSON: expected ',' or '}' at byte %d", p.pos)
		}
	}
}

// isNull consumes a JSON null if one comes next.
func (p *headerParser) isNull() bool {
	if p.peek() == 'n' && p.pos+4 <= len(p.h) && string(p.h[p.pos:p.pos+4]) == "null" {
		p.pos += 4
		return true
	}
	return false
}

// parseHeader parses and validates the header h of a file whose data
// section starts at file offset base and holds dataLen bytes: the tensors
// must tile it exactly.
func parseHeader(h []byte, base, dataLen int64) (*Reader, error) {
	if len(h) == 0 || h[0] != '{' {
		return nil, corrupt("header does not start with '{'")
	}
	p := &headerParser{h: h}
	// The shortest entry, "a":{"dtype":"U8","shape":[],"data_offsets":[0,0]},
	// takes 50 bytes with its comma: sizing for that bounds the entries
	// without growing (and copying) the slice and map as they fill.
	most := len(h)/50 + 1
	rd := &Reader{base: base, infos: make([]Info, 0, most), index: make(map[string]int, most), Metadata: map[string]string{}}
	sawMeta := false
	// Duplicate top-level keys are caught by rd.index (positions in
	// rd.infos until the sort below), duplicate metadata keys by
	// rd.Metadata: no second map per header.
	err := p.members(false, func(name string) error {
		if name == "" {
			return corrupt("empty tensor name")
		}
		if _, dup := rd.index[name]; dup || (name == metadataKey && sawMeta) {
			return corrupt("duplicate key %q in header", name)
		}
		if name == metadataKey {
			sawMeta = true
			if p.isNull() { // the reference implementation's "no metadata"
				return nil
			}
			if p.peek() != '{' {
				return corrupt("__metadata__ is not an object")
			}
			return p.members(false, func(k string) error {
				if _, dup := rd.Metadata[k]; dup {
					return corrupt("duplicate key %q in header", k)
				}
				if p.peek() != '"' {
					return corrupt("__metadata__ %q is not a string", k)
				}
				v, err := p.str()
				rd.Metadata[k] = v
				return err
			})
		}
		if p.peek() != '{' {
			return corrupt("header entry %q is not an object", name)
		}
		var dts string
		var sh []int64
		var offs [2]uint64
		haveDT, haveOffs := false, false
		err := p.members(false, func(k string) error {
			if (k == "dtype" && haveDT) || (k == "shape" && sh != nil) || (k == "data_offsets" && haveOffs) {
				return corrupt("duplicate key %q in header", k)
			}
			var err error
			switch k {
			case "dtype":
				if p.peek() != '"' {
					return corrupt("tensor %q: dtype is not a string", name)
				}
				dts, err = p.str()
				haveDT = true
			case "shape":
				var shape []uint64
				if shape, err = p.naturals(); err != nil {
					return err
				}
				sh = make([]int64, len(shape))
				for i, d := range shape {
					if d > math.MaxInt64 {
						return corrupt("tensor %q: dimension %d exceeds int64", name, d)
					}
					sh[i] = int64(d)
				}
			case "data_offsets":
				var o []uint64
				if o, err = p.naturals(); err != nil {
					return err
				}
				if len(o) != 2 {
					return corrupt("tensor %q: %d data_offsets, want 2", name, len(o))
				}
				offs = [2]uint64{o[0], o[1]}
				haveOffs = true
			default:
				return corrupt("tensor %q: unknown field %q", name, k)
			}
			return err
		})
		if err != nil {
			return err
		}
		if !haveDT || sh == nil || !haveOffs {
			return corrupt("tensor %q: needs dtype, shape and two data_offsets", name)
		}
		dt, err := ParseDType(dts)
		if err != nil {
			return corrupt("tensor %q: %w", name, err)
		}
		b, e := offs[0], offs[1]
		if b > e || e > uint64(dataLen) {
			return corrupt("tensor %q: data offsets [%d, %d] outside the %d-byte data section", name, b, e, dataLen)
		}
		want, err := Tensor{Name: name, DType: dt, Shape: sh}.byteSize()
		if err != nil {
			return corrupt("%w", err)
		}
		if int64(e-b) != want {
			return corrupt("tensor %q: %v%v needs %d bytes, data offsets give %d", name, dt, sh, want, e-b)
		}
		rd.index[name] = len(rd.infos)
		rd.infos = append(rd.infos, Info{Name: name, DType: dt, Shape: sh, Offset: int64(b), Size: want})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if p.ws(); p.pos != len(h) {
		return nil, corrupt("header has data after its JSON object")
	}
	rd.infos = slices.Clip(rd.infos)
	sort.Slice(rd.infos, func(i, j int) bool {
		a, b := rd.infos[i], rd.infos[j]
		if a.Offset != b.Offset {
			return a.Offset < b.Offset
		}
		if a.Size != b.Size {
			return a.Size < b.Size
		}
		return a.Name < b.Name
	})
	var pos int64
	for i, in := range rd.infos {
		if in.Offset != pos {
			return nil, corrupt("tensor %q starts at %d, expected %d (hole or overlap)", in.Name, in.Offset, pos)
		}
		pos = in.Offset + in.Size
		rd.index[in.Name] = i
	}
	if pos != dataLen {
		return nil, corrupt("tensors cover %d of the %d data bytes", pos, dataLen)
	}
	return rd, nil
}
