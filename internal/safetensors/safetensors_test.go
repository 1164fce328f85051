package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// allDTypes lists every DType with a sample shape for round trips.
var allDTypes = []DType{BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64}

func randomTensor(r *rand.Rand, name string, dt DType, shape []int64) Tensor {
	n, err := numElements(shape)
	if err != nil {
		panic(err)
	}
	data := make([]byte, n*dt.Size())
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return Tensor{Name: name, DType: dt, Shape: shape, Data: data}
}

// sampleTensors covers every dtype, a scalar, empty tensors and names that
// need JSON escaping.
func sampleTensors() []Tensor {
	r := rand.New(rand.NewPCG(1, 2))
	var ts []Tensor
	for i, dt := range allDTypes {
		ts = append(ts, randomTensor(r, fmt.Sprintf("t%02d.%s", i, dt), dt, []int64{2, 3}))
	}
	ts = append(ts,
		randomTensor(r, "scalar", F32, []int64{}),
		randomTensor(r, "scalar_nil_shape", I64, nil),
		randomTensor(r, "empty", F32, []int64{0, 4}),
		randomTensor(r, "empty_i8", I8, []int64{3, 0}),
		randomTensor(r, `quote"back\slash<&>é`, U8, []int64{5}),
	)
	return ts
}

func mustWrite(t testing.TB, ts []Tensor, md map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, ts, md); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mustRead(t testing.TB, b []byte) *File {
	t.Helper()
	f, err := Read(bytes.NewReader(b), int64(len(b)), ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// sameTensors compares by name, treating nil and empty shapes alike.
func sameTensors(t testing.TB, got, want []Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d tensors, want %d", len(got), len(want))
	}
	byName := map[string]Tensor{}
	for _, w := range want {
		byName[w.Name] = w
	}
	for _, g := range got {
		w, ok := byName[g.Name]
		if !ok {
			t.Fatalf("unexpected tensor %q", g.Name)
		}
		if g.DType != w.DType || len(g.Shape) != len(w.Shape) || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("tensor %q: got %v%v %d bytes, want %v%v %d bytes", g.Name, g.DType, g.Shape, len(g.Data), w.DType, w.Shape, len(w.Data))
		}
		for i := range g.Shape {
			if g.Shape[i] != w.Shape[i] {
				t.Fatalf("tensor %q: shape %v, want %v", g.Name, g.Shape, w.Shape)
			}
		}
	}
}

func TestRoundTripAllDTypes(t *testing.T) {
	ts := sampleTensors()
	md := map[string]string{"format": "pt", "step": "12", "unicode": "ünïcødé \"q\" <tag>", "": "empty key"}
	b := mustWrite(t, ts, md)
	f := mustRead(t, b)
	sameTensors(t, f.Tensors, ts)
	if !reflect.DeepEqual(f.Metadata, md) {
		t.Fatalf("metadata %v, want %v", f.Metadata, md)
	}
	if n := binary.LittleEndian.Uint64(b); n%8 != 0 {
		t.Fatalf("header length %d is not a multiple of 8", n)
	}
	// Every tensor is aligned to its element size within the data section
	// (the point of ordering by decreasing element size).
	var hdr map[string]struct {
		DType   string   `json:"dtype"`
		Offsets []uint64 `json:"data_offsets"`
	}
	n := binary.LittleEndian.Uint64(b)
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	for name, e := range hdr {
		if name == "__metadata__" {
			continue
		}
		dt, err := ParseDType(e.DType)
		if err != nil {
			t.Fatal(err)
		}
		if e.Offsets[0]%uint64(dt.Size()) != 0 {
			t.Errorf("tensor %q of %v at offset %d is misaligned", name, dt, e.Offsets[0])
		}
	}
	// Re-writing what was read gives the same bytes.
	if b2 := mustWrite(t, f.Tensors, f.Metadata); !bytes.Equal(b, b2) {
		t.Fatal("re-serialization differs")
	}
}

func TestWriteOrderIndependent(t *testing.T) {
	ts := sampleTensors()
	want := mustWrite(t, ts, map[string]string{"a": "b"})
	r := rand.New(rand.NewPCG(3, 4))
	for range 5 {
		sh := append([]Tensor(nil), ts...)
		r.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
		if got := mustWrite(t, sh, map[string]string{"a": "b"}); !bytes.Equal(got, want) {
			t.Fatal("output depends on the order of the input slice")
		}
	}
}

// TestSpecVector compares Write's bytes with a file assembled by hand from
// the format description: u64 LE header length, JSON header padded with
// spaces to 8 bytes, data in order of decreasing element size then name.
func TestSpecVector(t *testing.T) {
	ts := []Tensor{
		F32Tensor("a", []int64{2}, []float32{1, -2}),
		I8Tensor("b", []int64{3}, []int8{1, -1, 127}),
		I64Tensor("s", nil, []int64{7}),
	}
	header := `{"__metadata__":{"format":"galleon"},` +
		`"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},` +
		`"b":{"dtype":"I8","shape":[3],"data_offsets":[16,19]},` +
		`"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}` + "   "
	want := []byte{200, 0, 0, 0, 0, 0, 0, 0}
	want = append(want, header...)
	want = append(want,
		7, 0, 0, 0, 0, 0, 0, 0, // s = 7 (I64)
		0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, // a = 1.0, -2.0 (F32)
		0x01, 0xff, 0x7f, // b = 1, -1, 127 (I8)
	)
	got := mustWrite(t, ts, map[string]string{"format": "galleon"})
	if !bytes.Equal(got, want) {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	f := mustRead(t, want)
	a, _ := f.Tensor("a")
	if v, err := a.Float32s(); err != nil || !reflect.DeepEqual(v, []float32{1, -2}) {
		t.Fatalf("a = %v, %v", v, err)
	}
	b, _ := f.Tensor("b")
	if v, err := b.Int8s(); err != nil || !reflect.DeepEqual(v, []int8{1, -1, 127}) {
		t.Fatalf("b = %v, %v", v, err)
	}
	s, _ := f.Tensor("s")
	if v, err := s.Int64s(); err != nil || !reflect.DeepEqual(v, []int64{7}) || len(s.Shape) != 0 {
		t.Fatalf("s = %v %v, %v", v, s.Shape, err)
	}
	if names := []string{f.Tensors[0].Name, f.Tensors[1].Name, f.Tensors[2].Name}; !reflect.DeepEqual(names, []string{"s", "a", "b"}) {
		t.Fatalf("tensors in file order %v", names)
	}
}

func TestHelpers(t *testing.T) {
	f32 := []float32{0, float32(math.Copysign(0, -1)), 1.5, float32(math.Inf(1)), float32(math.Inf(-1)), math.MaxFloat32, math.SmallestNonzeroFloat32}
	nan := math.Float32frombits(0x7fc00001) // a NaN payload must survive
	f32 = append(f32, nan)
	i8 := []int8{-128, -1, 0, 1, 127}
	i32 := []int32{math.MinInt32, -1, 0, 1, math.MaxInt32}
	i64 := []int64{math.MinInt64, -1, 0, 1, math.MaxInt64}
	u8 := []byte{0, 1, 255}
	ts := []Tensor{
		F32Tensor("f32", []int64{2, 4}, f32),
		I8Tensor("i8", []int64{5}, i8),
		I32Tensor("i32", []int64{5, 1}, i32),
		I64Tensor("i64", []int64{5}, i64),
		U8Tensor("u8", []int64{3}, u8),
	}
	f := mustRead(t, mustWrite(t, ts, nil))
	get := func(name string) Tensor {
		tt, ok := f.Tensor(name)
		if !ok {
			t.Fatalf("no tensor %q", name)
		}
		return tt
	}
	gf, err := get("f32").Float32s()
	if err != nil {
		t.Fatal(err)
	}
	for i := range f32 {
		if math.Float32bits(gf[i]) != math.Float32bits(f32[i]) {
			t.Fatalf("f32[%d] = %x, want %x", i, math.Float32bits(gf[i]), math.Float32bits(f32[i]))
		}
	}
	if g, err := get("i8").Int8s(); err != nil || !reflect.DeepEqual(g, i8) {
		t.Fatalf("i8 %v %v", g, err)
	}
	if g, err := get("i32").Int32s(); err != nil || !reflect.DeepEqual(g, i32) {
		t.Fatalf("i32 %v %v", g, err)
	}
	if g, err := get("i64").Int64s(); err != nil || !reflect.DeepEqual(g, i64) {
		t.Fatalf("i64 %v %v", g, err)
	}
	if g, err := get("u8").Uint8s(); err != nil || !reflect.DeepEqual(g, u8) {
		t.Fatalf("u8 %v %v", g, err)
	}
	if _, err := get("i8").Float32s(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Float32s of I8: %v", err)
	}
	if _, err := F32Tensor("x", []int64{3}, []float32{1}).Float32s(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Float32s with wrong shape: %v", err)
	}
	if _, ok := f.Tensor("missing"); ok {
		t.Fatal("found a missing tensor")
	}
}

func TestWriteRejectsInvalid(t *testing.T) {
	good := F32Tensor("ok", []int64{1}, []float32{1})
	cases := map[string]struct {
		ts []Tensor
		md map[string]string
	}{
		"short data":      {ts: []Tensor{{Name: "x", DType: F32, Shape: []int64{2}, Data: make([]byte, 4)}}},
		"long data":       {ts: []Tensor{{Name: "x", DType: F32, Shape: []int64{1}, Data: make([]byte, 5)}}},
		"zero dtype":      {ts: []Tensor{{Name: "x", Shape: []int64{1}, Data: make([]byte, 4)}}},
		"bad dtype":       {ts: []Tensor{{Name: "x", DType: 200, Shape: []int64{1}, Data: make([]byte, 4)}}},
		"negative dim":    {ts: []Tensor{{Name: "x", DType: U8, Shape: []int64{-1, -1}, Data: make([]byte, 1)}}},
		"overflow":        {ts: []Tensor{{Name: "x", DType: U8, Shape: []int64{1 << 32, 1 << 32}}}},
		"bytes overflow":  {ts: []Tensor{{Name: "x", DType: F64, Shape: []int64{1 << 61}}}},
		"empty name":      {ts: []Tensor{{Name: "", DType: U8, Shape: []int64{0}}}},
		"reserved name":   {ts: []Tensor{{Name: "__metadata__", DType: U8, Shape: []int64{0}}}},
		"duplicate":       {ts: []Tensor{good, good}},
		"bad utf8 name":   {ts: []Tensor{{Name: "\xff", DType: U8, Shape: []int64{0}}}},
		"bad utf8 value":  {ts: []Tensor{good}, md: map[string]string{"k": "\xfe"}},
		"bad utf8 key":    {ts: []Tensor{good}, md: map[string]string{"\xfe": "v"}},
		"nil data scalar": {ts: []Tensor{{Name: "x", DType: F32}}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Write(&buf, c.ts, c.md)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if buf.Len() != 0 {
				t.Fatalf("%d bytes written before the error", buf.Len())
			}
		})
	}
}

func TestNumElements(t *testing.T) {
	cases := []struct {
		shape []int64
		n     int64
		ok    bool
	}{
		{nil, 1, true},
		{[]int64{}, 1, true},
		{[]int64{0}, 0, true},
		{[]int64{2, 3, 4}, 24, true},
		{[]int64{math.MaxInt64}, math.MaxInt64, true},
		{[]int64{math.MaxInt64, 2}, 0, false},
		{[]int64{1 << 32, 1 << 32}, 0, false},
		{[]int64{1 << 31, 1 << 31, 0}, 0, true}, // the format allows it: zero elements
		{[]int64{0, -1}, 0, false},
		{[]int64{-1, 0}, 0, false},
	}
	for _, c := range cases {
		n, err := numElements(c.shape)
		if (err == nil) != c.ok || (c.ok && n != c.n) {
			t.Errorf("numElements(%v) = %d, %v; want %d ok=%v", c.shape, n, err, c.n, c.ok)
		}
	}
}

// raw assembles a file from a header string and data, with no padding.
func raw(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func withLen(n uint64, rest string) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, n), rest...)
}

// corruptFiles are hand-made hostile files; each must be rejected with an
// error wrapping ErrCorrupt.
func corruptFiles() map[string][]byte {
	e := func(dtype, shape, offsets string) string {
		return fmt.Sprintf(`{"dtype":%s,"shape":%s,"data_offsets":%s}`, dtype, shape, offsets)
	}
	d8 := make([]byte, 8)
	return map[string][]byte{
		"empty":                   {},
		"7 bytes":                 {1, 0, 0, 0, 0, 0, 0},
		"zero header":             withLen(0, ""),
		"huge header length":      withLen(1<<63, "{}"),
		"header 2^40":             withLen(1<<40, "{}"),
		"header above limit":      withLen(DefaultMaxHeaderSize+1, "{}"),
		"header past end":         withLen(3, "{}"),
		"header length max":       withLen(math.MaxUint64, "{}"),
		"not json":                raw(`{nope}`, nil),
		"json array":              raw(`[]`, nil),
		"json string":             raw(`"x"`, nil),
		"json null":               raw(`null`, nil),
		"leading space":           raw(` {}`, nil),
		"trailing junk":           raw(`{}x`, nil),
		"two objects":             raw(`{}{}`, nil),
		"unterminated":            raw(`{"a":`, nil),
		"nul padding":             raw("{}\x00\x00", nil),
		"offsets past end":        raw(`{"a":`+e(`"U8"`, `[8]`, `[0,8]`)+`}`, make([]byte, 4)),
		"offsets beyond u64":      raw(`{"a":`+e(`"U8"`, `[8]`, `[0,18446744073709551616]`)+`}`, d8),
		"begin after end":         raw(`{"a":`+e(`"U8"`, `[0]`, `[8,0]`)+`}`, d8),
		"overlap":                 raw(`{"a":`+e(`"U8"`, `[8]`, `[0,8]`)+`,"b":`+e(`"U8"`, `[4]`, `[4,8]`)+`}`, d8),
		"same range":              raw(`{"a":`+e(`"U8"`, `[8]`, `[0,8]`)+`,"b":`+e(`"U8"`, `[8]`, `[0,8]`)+`}`, d8),
		"hole":                    raw(`{"a":`+e(`"U8"`, `[4]`, `[0,4]`)+`,"b":`+e(`"U8"`, `[2]`, `[6,8]`)+`}`, d8),
		"leading hole":            raw(`{"a":`+e(`"U8"`, `[4]`, `[4,8]`)+`}`, d8),
		"trailing data":           raw(`{"a":`+e(`"U8"`, `[4]`, `[0,4]`)+`}`, d8),
		"data without tensors":    raw(`{}`, d8),
		"size mismatch":           raw(`{"a":`+e(`"F32"`, `[1]`, `[0,8]`)+`}`, d8),
		"negative dim":            raw(`{"a":`+e(`"U8"`, `[-1]`, `[0,0]`)+`}`, nil),
		"negative offset":         raw(`{"a":`+e(`"U8"`, `[0]`, `[-8,0]`)+`}`, nil),
		"float dim":               raw(`{"a":`+e(`"U8"`, `[1.5]`, `[0,1]`)+`}`, []byte{1}),
		"exponent dim":            raw(`{"a":`+e(`"U8"`, `[1e0]`, `[0,1]`)+`}`, []byte{1}),
		"string dim":              raw(`{"a":`+e(`"U8"`, `["1"]`, `[0,1]`)+`}`, []byte{1}),
		"product overflow":        raw(`{"a":`+e(`"F32"`, `[4294967296,4294967296]`, `[0,0]`)+`}`, nil),
		"bytes overflow":          raw(`{"a":`+e(`"F64"`, `[2305843009213693952]`, `[0,0]`)+`}`, nil),
		"dim above int64, zero":   raw(`{"a":`+e(`"U8"`, `[0,18446744073709551615]`, `[0,0]`)+`}`, nil),
		"bad dtype":               raw(`{"a":`+e(`"F99"`, `[1]`, `[0,1]`)+`}`, []byte{1}),
		"lowercase dtype":         raw(`{"a":`+e(`"f32"`, `[1]`, `[0,4]`)+`}`, make([]byte, 4)),
		"numeric dtype":           raw(`{"a":`+e(`5`, `[1]`, `[0,1]`)+`}`, []byte{1}),
		"duplicate names":         raw(`{"a":`+e(`"U8"`, `[4]`, `[0,4]`)+`,"a":`+e(`"U8"`, `[4]`, `[4,8]`)+`}`, d8),
		"duplicate same entry":    raw(`{"a":`+e(`"U8"`, `[0]`, `[0,0]`)+`,"a":`+e(`"U8"`, `[0]`, `[0,0]`)+`}`, nil),
		"duplicate after utf8":    raw("{\"a\xff\":"+e(`"U8"`, `[0]`, `[0,0]`)+",\"a\xfe\":"+e(`"U8"`, `[0]`, `[0,0]`)+`}`, nil),
		"duplicate key in entry":  raw(`{"a":{"dtype":"U8","dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, nil),
		"duplicate metadata":      raw(`{"__metadata__":{"k":"v"},"__metadata__":{"k":"w"}}`, nil),
		"duplicate metadata key":  raw(`{"__metadata__":{"k":"v","k":"w"}}`, nil),
		"empty name":              raw(`{"":`+e(`"U8"`, `[0]`, `[0,0]`)+`}`, nil),
		"non-string metadata":     raw(`{"__metadata__":{"k":1}}`, nil),
		"metadata null value":     raw(`{"__metadata__":{"k":null}}`, nil),
		"metadata not object":     raw(`{"__metadata__":"x"}`, nil),
		"metadata array":          raw(`{"__metadata__":["x"]}`, nil),
		"metadata nested":         raw(`{"__metadata__":{"k":{"x":"y"}}}`, nil),
		"entry not object":        raw(`{"a":5}`, nil),
		"entry null":              raw(`{"a":null}`, nil),
		"missing dtype":           raw(`{"a":{"shape":[0],"data_offsets":[0,0]}}`, nil),
		"extra key":               raw(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":1}}`, nil),
		"three offsets":           raw(`{"a":`+e(`"U8"`, `[0]`, `[0,0,0]`)+`}`, nil),
		"one offset":              raw(`{"a":`+e(`"U8"`, `[0]`, `[0]`)+`}`, nil),
		"null shape":              raw(`{"a":`+e(`"U8"`, `null`, `[0,1]`)+`}`, []byte{1}),
		"nested shape":            raw(`{"a":`+e(`"U8"`, `[[1]]`, `[0,1]`)+`}`, []byte{1}),
		"deep nesting":            raw(strings.Repeat("[", 5000), nil),
		"rank 65":                 raw(`{"a":`+e(`"U8"`, "["+strings.Repeat("1,", 64)+"1]", `[0,1]`)+`}`, []byte{1}),
		"long offsets array":      raw(`{"a":`+e(`"U8"`, `[0]`, "["+strings.Repeat("0,", 100)+"0]")+`}`, nil),
		"deep nesting in object":  raw(`{"a":{"x":[[[[1]]]]}}`, nil),
		"size claims more (body)": raw(`{"a":`+e(`"U8"`, `[8]`, `[0,8]`)+`}`, make([]byte, 7)),
	}
}

func TestReadRejectsCorrupt(t *testing.T) {
	for name, b := range corruptFiles() {
		t.Run(name, func(t *testing.T) {
			f, err := Read(bytes.NewReader(b), int64(len(b)), ReadOptions{})
			if err == nil {
				t.Fatalf("accepted: %+v", f)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
		})
	}
}

func TestReadAcceptsEdgeCases(t *testing.T) {
	cases := map[string][]byte{
		"empty object":          raw(`{}`, nil),
		"space padding":         raw(`{}      `, nil),
		"only metadata":         raw(`{"__metadata__":{"a":"b"}}`, nil),
		"null metadata":         raw(`{"__metadata__":null}`, nil),
		"header order by name":  raw(`{"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{1, 2}),
		"zero-size everywhere":  raw(`{"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[2,0],"data_offsets":[0,0]}}`, make([]byte, 4)),
		"huge dims times zero":  raw(`{"a":{"dtype":"F64","shape":[0,9223372036854775807,9223372036854775807],"data_offsets":[0,0]}}`, nil),
		"escaped name":          raw(`{"\u00e9\n":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}`, []byte{9}),
		"whitespace in header":  raw("{ \"a\" : { \"dtype\" : \"U8\" , \"shape\" : [ 1 ] , \"data_offsets\" : [ 0 , 1 ] } }\n", []byte{9}),
		"rank 64":               raw(`{"a":{"dtype":"U8","shape":[`+strings.Repeat("1,", 63)+`1],"data_offsets":[0,1]}}`, []byte{1}),
		"python-style ordering": raw(`{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			f := mustRead(t, b)
			if f.Metadata == nil {
				t.Fatal("nil metadata map")
			}
		})
	}
	f := mustRead(t, cases["header order by name"])
	if f.Tensors[0].Name != "a" || f.Tensors[1].Name != "b" || f.Tensors[0].Data[0] != 1 {
		t.Fatalf("tensors not in data order: %+v", f.Tensors)
	}
	// A tensor's slice is capped: appending to it cannot clobber the next one.
	_ = append(f.Tensors[0].Data, 99)
	if f.Tensors[1].Data[0] != 2 {
		t.Fatal("append to one tensor overwrote the next")
	}
	z := mustRead(t, cases["zero-size everywhere"])
	var names []string
	for _, tt := range z.Tensors {
		names = append(names, tt.Name)
	}
	if !reflect.DeepEqual(names, []string{"y", "a", "z"}) {
		t.Fatalf("order %v, want [y a z] (by begin, end, name)", names)
	}
}

// TestEveryPrefixTruncated cuts a valid file at every length: each prefix
// must be rejected, and reading must never panic.
func TestEveryPrefixTruncated(t *testing.T) {
	b := mustWrite(t, sampleTensors(), map[string]string{"k": "v"})
	for n := 0; n < len(b); n++ {
		p := b[:n]
		if _, err := Read(bytes.NewReader(p), int64(n), ReadOptions{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("prefix of %d/%d bytes: err = %v", n, len(b), err)
		}
	}
	// And a reader shorter than the size its caller claims.
	for _, n := range []int{len(b) / 2, len(b) - 1} {
		if _, err := Read(bytes.NewReader(b[:n]), int64(len(b)), ReadOptions{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("reader of %d bytes claimed as %d: err = %v", n, len(b), err)
		}
	}
}

// TestEveryByteFlipped flips each byte of a small valid file: no panic, and
// whatever is accepted re-serializes consistently.
func TestEveryByteFlipped(t *testing.T) {
	b := mustWrite(t, []Tensor{F32Tensor("w", []int64{2}, []float32{1, 2}), I8Tensor("q", []int64{1}, []int8{3})}, map[string]string{"k": "v"})
	for i := range b {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			c := append([]byte(nil), b...)
			c[i] ^= x
			checkReadConsistent(t, c)
		}
	}
}

func TestMaxHeaderSizeOption(t *testing.T) {
	b := mustWrite(t, sampleTensors(), nil)
	n := int64(binary.LittleEndian.Uint64(b))
	if _, err := Read(bytes.NewReader(b), int64(len(b)), ReadOptions{MaxHeaderSize: n}); err != nil {
		t.Fatalf("limit equal to the header: %v", err)
	}
	if _, err := Read(bytes.NewReader(b), int64(len(b)), ReadOptions{MaxHeaderSize: n - 1}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("limit below the header: %v", err)
	}
}

// TestHeaderAboveDefault: a header between the default bound and the
// ceiling needs the option.
func TestHeaderAboveDefault(t *testing.T) {
	b := raw(`{}`+strings.Repeat(" ", DefaultMaxHeaderSize), nil)
	if _, err := Read(bytes.NewReader(b), int64(len(b)), ReadOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("default bound: %v", err)
	}
	if _, err := Read(bytes.NewReader(b), int64(len(b)), ReadOptions{MaxHeaderSize: 1 << 40}); err != nil {
		t.Fatalf("raised bound: %v", err)
	}
	big := withLen(MaxHeaderSize+1, "{}")
	if _, err := Read(bytes.NewReader(big), int64(len(big)), ReadOptions{MaxHeaderSize: 1 << 40}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("above the ceiling: %v", err)
	}
}

// TestSizeClaimNotTrusted: a caller's size far beyond the reader's content
// must fail before a buffer of that size is allocated.
func TestSizeClaimNotTrusted(t *testing.T) {
	b := mustWrite(t, sampleTensors(), nil)
	if _, err := Read(bytes.NewReader(b), 1<<50, ReadOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v", err)
	}
	if _, err := Read(nil, 100, ReadOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil reader: %v", err)
	}
}

type errReaderAt struct{}

func (errReaderAt) ReadAt([]byte, int64) (int, error) { return 0, io.ErrClosedPipe }

func TestReadIOErrorIsNotCorrupt(t *testing.T) {
	_, err := Read(errReaderAt{}, 100, ReadOptions{})
	if !errors.Is(err, io.ErrClosedPipe) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v", err)
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.safetensors")
	ts := sampleTensors()
	if err := WriteFile(p, ts, map[string]string{"x": "y"}); err != nil {
		t.Fatal(err)
	}
	f, err := ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sameTensors(t, f.Tensors, ts)
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	if _, err := ReadFile(dir); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ReadFile(dir): %v", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadFile(missing): %v", err)
	}
}

// failAfter fails every write once n bytes went through.
type failAfter struct {
	w io.Writer
	n int
}

var errInjected = errors.New("injected write failure")

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		m, _ := f.w.Write(p[:f.n])
		f.n = 0
		return m, errInjected
	}
	f.n -= len(p)
	return f.w.Write(p)
}

// dirNames lists a directory, to catch temporary files left behind.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ckpt.safetensors")
	orig := []Tensor{F32Tensor("w", []int64{3}, []float32{1, 2, 3})}
	if err := WriteFile(p, orig, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(p)
	big := []Tensor{randomTensor(rand.New(rand.NewPCG(5, 6)), "big", F32, []int64{1 << 19})} // 2 MiB > the write buffer

	intact := func(t *testing.T) {
		t.Helper()
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("original changed: %v", err)
		}
		if names := dirNames(t, dir); !reflect.DeepEqual(names, []string{"ckpt.safetensors"}) {
			t.Fatalf("directory holds %v", names)
		}
	}

	for _, n := range []int{0, 7, 100, 1 << 20, 1<<20 + 5} {
		t.Run(fmt.Sprintf("fail after %d bytes", n), func(t *testing.T) {
			writeHook = func(w io.Writer) io.Writer { return &failAfter{w: w, n: n} }
			defer func() { writeHook = func(w io.Writer) io.Writer { return w } }()
			if err := WriteFile(p, big, nil); !errors.Is(err, errInjected) {
				t.Fatalf("err = %v", err)
			}
			intact(t)
		})
	}
	t.Run("invalid tensor", func(t *testing.T) {
		bad := []Tensor{{Name: "x", DType: F32, Shape: []int64{2}, Data: make([]byte, 3)}}
		if err := WriteFile(p, bad, nil); !errors.Is(err, ErrInvalid) {
			t.Fatalf("err = %v", err)
		}
		intact(t)
	})
	t.Run("rename onto a directory", func(t *testing.T) {
		sub := filepath.Join(dir, "sub")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "keep"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(sub)
		if err := WriteFile(sub, big, nil); err == nil {
			t.Fatal("replaced a directory")
		}
		if names := dirNames(t, dir); !reflect.DeepEqual(names, []string{"ckpt.safetensors", "sub"}) {
			t.Fatalf("directory holds %v", names)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		if err := WriteFile(filepath.Join(dir, "nope", "x.safetensors"), big, nil); err == nil {
			t.Fatal("no error")
		}
		intact(t)
	})
	t.Run("read-only directory", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root ignores directory permissions")
		}
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(dir, 0o755)
		if err := WriteFile(p, big, nil); err == nil {
			t.Fatal("no error")
		}
		intact(t)
	})
	t.Run("success keeps mode", func(t *testing.T) {
		if err := WriteFile(p, big, map[string]string{"k": "v"}); err != nil {
			t.Fatal(err)
		}
		f, err := ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		sameTensors(t, f.Tensors, big)
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v, want 0600 kept", fi.Mode())
		}
		if names := dirNames(t, dir); !reflect.DeepEqual(names, []string{"ckpt.safetensors"}) {
			t.Fatalf("directory holds %v", names)
		}
	})
}

// pythonReader parses a safetensors file with nothing but the format
// description (struct + json), and writes one in the layout of the Python
// package (metadata first, tensors by decreasing alignment then name).
const pythonScript = `
import json, struct, sys
mode, path = sys.argv[1], sys.argv[2]
if mode == "read":
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8+n])
    d = b[8+n:]
    out = {"__metadata__": h.pop("__metadata__", {})}
    fmt = {"F32": "f", "I8": "b", "I32": "i", "I64": "q", "U8": "B"}
    for k, v in h.items():
        s, e = v["data_offsets"]
        c = fmt[v["dtype"]]
        out[k] = [v["dtype"], v["shape"], list(struct.unpack("<%d%s" % ((e - s) // struct.calcsize(c), c), d[s:e]))]
    print(json.dumps(out, sort_keys=True))
else:
    ts = [("bias", "F32", [2], struct.pack("<2f", 0.5, -1.25)),
          ("ids", "I64", [3], struct.pack("<3q", 1, -2, 3)),
          ("q", "I8", [2, 2], struct.pack("<4b", -127, 0, 5, 127)),
          ("w", "F32", [1, 3], struct.pack("<3f", 1, 2, 3))]
    size = {"F32": 4, "I64": 8, "I8": 1}
    ts.sort(key=lambda t: (-size[t[1]], t[0]))
    h, off, data = {"__metadata__": {"format": "pt"}}, 0, b""
    for name, dt, shape, raw in ts:
        h[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw); data += raw
    hb = json.dumps(h, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(hb)) + hb + data)
`

// TestPythonInterop checks both directions against a Python implementation
// written from the format description (the safetensors Python package is
// not installable here); skipped without python3.
func TestPythonInterop(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "st.py")
	if err := os.WriteFile(script, []byte(pythonScript), 0o644); err != nil {
		t.Fatal(err)
	}

	// Go writes, Python reads.
	p := filepath.Join(dir, "go.safetensors")
	ts := []Tensor{
		F32Tensor("w", []int64{2, 2}, []float32{1.5, -2, 0.25, 3}),
		I8Tensor("q", []int64{3}, []int8{-127, 0, 127}),
		I32Tensor("i", []int64{2}, []int32{-5, 1 << 30}),
		I64Tensor("step", nil, []int64{42}),
		U8Tensor("b", []int64{0}, nil),
	}
	if err := WriteFile(p, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, script, "read", p).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	want := `{"__metadata__": {"format": "pt"}, "b": ["U8", [0], []], "i": ["I32", [2], [-5, 1073741824]], ` +
		`"q": ["I8", [3], [-127, 0, 127]], "step": ["I64", [], [42]], "w": ["F32", [2, 2], [1.5, -2.0, 0.25, 3.0]]}`
	if got := strings.TrimSpace(string(out)); got != want {
		t.Fatalf("python read\n%s\nwant\n%s", got, want)
	}

	// Python writes, Go reads and re-writes the same bytes: both sides
	// agree on layout, though not on the order of header keys.
	p2 := filepath.Join(dir, "py.safetensors")
	if out, err := exec.Command(py, script, "write", p2).CombinedOutput(); err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	f, err := ReadFile(p2)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tt := range f.Tensors {
		names = append(names, tt.Name)
	}
	if !reflect.DeepEqual(names, []string{"ids", "bias", "w", "q"}) || f.Metadata["format"] != "pt" {
		t.Fatalf("tensors %v metadata %v", names, f.Metadata)
	}
	w, _ := f.Tensor("w")
	if v, err := w.Float32s(); err != nil || !reflect.DeepEqual(v, []float32{1, 2, 3}) || !reflect.DeepEqual(w.Shape, []int64{1, 3}) {
		t.Fatalf("w = %v %v %v", v, w.Shape, err)
	}
	q, _ := f.Tensor("q")
	if v, err := q.Int8s(); err != nil || !reflect.DeepEqual(v, []int8{-127, 0, 5, 127}) {
		t.Fatalf("q = %v %v", v, err)
	}
	ids, _ := f.Tensor("ids")
	if v, err := ids.Int64s(); err != nil || !reflect.DeepEqual(v, []int64{1, -2, 3}) {
		t.Fatalf("ids = %v %v", v, err)
	}
	pyBytes, _ := os.ReadFile(p2)
	goBytes := mustWrite(t, f.Tensors, f.Metadata)
	n1, n2 := binary.LittleEndian.Uint64(pyBytes), binary.LittleEndian.Uint64(goBytes)
	if !bytes.Equal(pyBytes[8+n1:], goBytes[8+n2:]) {
		t.Fatal("data sections differ between the Python layout and ours")
	}
}
