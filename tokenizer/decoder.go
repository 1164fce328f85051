package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// decoder turns a list of token strings into a list of text pieces, as the
// reference's decode_chain does; the pieces are joined at the end.
type decoder interface {
	decodeChain(tokens []string, t *Tokenizer) []string
}

type seqDecoder []decoder

func (q seqDecoder) decodeChain(tokens []string, t *Tokenizer) []string {
	for _, d := range q {
		tokens = d.decodeChain(tokens, t)
	}
	return tokens
}

// byteLevelDecoder maps byte-level characters back to bytes; added tokens
// pass through verbatim. Go strings hold any bytes, so no replacement
// character is substituted for invalid UTF-8: Decode(Encode(s)) == s for
// every s.
type byteLevelDecoder struct{}

func (byteLevelDecoder) decodeChain(tokens []string, t *Tokenizer) []string {
	var out []string
	var cur []byte
	flush := func() {
		if len(cur) > 0 {
			out = append(out, string(cur))
			cur = cur[:0]
		}
	}
	for _, tok := range tokens {
		if _, ok := t.addedByContent[tok]; ok {
			flush()
			out = append(out, tok)
			continue
		}
		for _, r := range tok {
			if b, ok := unicodeToByte[r]; ok {
				cur = append(cur, b)
			} else {
				cur = utf8.AppendRune(cur, r)
			}
		}
	}
	flush()
	return out
}

// byteFallbackDecoder turns runs of <0xNN> tokens into their bytes.
type byteFallbackDecoder struct{}

func parseByteToken(tok string) (byte, bool) {
	if len(tok) != 6 || !strings.HasPrefix(tok, "<0x") || tok[5] != '>' {
		return 0, false
	}
	var v byte
	for _, c := range []byte(tok[3:5]) {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return v, true
}

func (byteFallbackDecoder) decodeChain(tokens []string, _ *Tokenizer) []string {
	var out []string
	var cur []byte
	for _, tok := range tokens {
		if b, ok := parseByteToken(tok); ok {
			cur = append(cur, b)
			continue
		}
		if len(cur) > 0 {
			out = append(out, string(cur))
			cur = cur[:0]
		}
		out = append(out, tok)
	}
	if len(cur) > 0 {
		out = append(out, string(cur))
	}
	return out
}

type fuseDecoder struct{}

func (fuseDecoder) decodeChain(tokens []string, _ *Tokenizer) []string {
	return []string{strings.Join(tokens, "")}
}

// stripDecoder removes up to start leading and stop trailing copies of content
// from every piece.
type stripDecoder struct {
	content     string
	start, stop int
}

func (d stripDecoder) decodeChain(tokens []string, _ *Tokenizer) []string {
	out := make([]string, len(tokens))
	for i, tok := range tokens {
		for k := 0; k < d.start && d.content != "" && strings.HasPrefix(tok, d.content); k++ {
			tok = tok[len(d.content):]
		}
		for k := 0; k < d.stop && d.content != "" && strings.HasSuffix(tok, d.content); k++ {
			tok = tok[:len(tok)-len(d.content)]
		}
		out[i] = tok
	}
	return out
}

type replaceDecoder struct{ old, new string }

func (d replaceDecoder) decodeChain(tokens []string, _ *Tokenizer) []string {
	out := make([]string, len(tokens))
	for i, tok := range tokens {
		out[i] = strings.ReplaceAll(tok, d.old, d.new)
	}
	return out
}

// metaspaceDecoder turns the replacement character back into spaces and drops
// the space it put before the first token.
type metaspaceDecoder struct{ replacement string }

func (d metaspaceDecoder) decodeChain(tokens []string, _ *Tokenizer) []string {
	out := make([]string, len(tokens))
	for i, tok := range tokens {
		tok = strings.ReplaceAll(tok, d.replacement, " ")
		if i == 0 {
			tok = strings.TrimPrefix(tok, " ")
		}
		out[i] = tok
	}
	return out
}

// bytesToUnicode is GPT-2's table from bytes to printable characters.
var bytesToUnicode, unicodeToByte = func() ([256]rune, map[rune]byte) {
	var t [256]rune
	inv := map[rune]byte{}
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			t[b] = rune(b)
		} else {
			t[b] = rune(256 + n)
			n++
		}
		inv[t[b]] = byte(b)
	}
	return t, inv
}()

// rawBytes maps a byte-level token back to its bytes; ok is false when a
// character is outside the table.
func rawBytes(tok string) (string, bool) {
	b := make([]byte, 0, len(tok))
	for _, r := range tok {
		c, ok := unicodeToByte[r]
		if !ok {
			return "", false
		}
		b = append(b, c)
	}
	return string(b), true
}
