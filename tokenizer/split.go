package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// Character classes used by the hand-written pre-tokenizer splitters.
const (
	clOther  uint8 = iota // anything that is not a letter, number or space
	clLetter              // \p{L}
	clNumber              // \p{N}
	clSpace               // \s (which set depends on the splitter)
)

// asciiClass holds the class of every ASCII byte; both whitespace sets agree
// on ASCII (\t \n \v \f \r and space).
var asciiClass = func() (t [128]uint8) {
	for c := 0; c < 128; c++ {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			t[c] = clLetter
		case c >= '0' && c <= '9':
			t[c] = clNumber
		case c == ' ', c >= '\t' && c <= '\r':
			t[c] = clSpace
		}
	}
	return
}()

// classAt returns the class and byte length of the character at s[i]. jsSpace
// selects JavaScript's \s (which adds U+FEFF and lacks U+0085) instead of the
// Unicode White_Space property. Invalid UTF-8 bytes are single-byte "other"
// characters, so any Go string splits without loss.
func classAt(s string, i int, jsSpace bool) (uint8, int) {
	c := s[i]
	if c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && n == 1 {
		return clOther, 1
	}
	return runeClass(r, jsSpace), n
}

// runeClass classes a character with the reference engine's Unicode tables
// (unicode_tables.go), which are newer than Go's.
func runeClass(r rune, jsSpace bool) uint8 {
	switch {
	case unicode.Is(jsLetter, r):
		return clLetter
	case unicode.Is(jsNumber, r):
		return clNumber
	}
	if jsSpace {
		if r == 0xFEFF || (r != 0x85 && unicode.IsSpace(r)) {
			return clSpace
		}
		return clOther
	}
	if unicode.IsSpace(r) { // the White_Space property
		return clSpace
	}
	return clOther
}

// contraction reports the length of an English contraction suffix ('s, 't,
// 're, 've, 'm, 'll, 'd) at s[i], which must be an apostrophe; fold accepts
// upper-case letters as the (?i:...) group of the Llama 3 pattern does.
func contraction(s string, i int, fold bool) int {
	if i+1 >= len(s) {
		return 0
	}
	lower := func(c byte) byte {
		if fold && c >= 'A' && c <= 'Z' {
			return c + 'a' - 'A'
		}
		return c
	}
	switch lower(s[i+1]) {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		if i+2 < len(s) && lower(s[i+2]) == 'e' {
			return 3
		}
	case 'l':
		if i+2 < len(s) && lower(s[i+2]) == 'l' {
			return 3
		}
	}
	return 0
}

// whitespaceEnd returns the end of the run of \s characters starting at i,
// and the byte length of its last character.
func whitespaceEnd(s string, i int, jsSpace bool) (end, last int) {
	j := i
	for j < len(s) {
		cl, n := classAt(s, j, jsSpace)
		if cl != clSpace {
			break
		}
		last = n
		j += n
	}
	return j, last
}

// runEnd returns the end of the run of characters of class cl starting at i.
func runEnd(s string, i int, cl uint8, jsSpace bool) int {
	for i < len(s) {
		c, n := classAt(s, i, jsSpace)
		if c != cl {
			break
		}
		i += n
	}
	return i
}

// otherEnd returns the end of the run of characters that are not letters,
// numbers or spaces starting at i.
func otherEnd(s string, i int, jsSpace bool) int { return runEnd(s, i, clOther, jsSpace) }

// splitGPT2 appends to out the matches of GPT-2's pattern
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// with JavaScript's \s, as the reference's ByteLevel pre-tokenizer compiles
// it. The pattern matches every character, so the matches tile s.
func splitGPT2(s string, out []string) []string {
	const js = true
	i := 0
	for i < len(s) {
		c := s[i]
		if c == '\'' {
			if n := contraction(s, i, false); n > 0 {
				out = append(out, s[i:i+n])
				i += n
				continue
			}
		}
		cl, _ := classAt(s, i, js)
		start := i
		if c == ' ' && i+1 < len(s) {
			if ncl, _ := classAt(s, i+1, js); ncl != clSpace {
				cl = ncl
				i++ // the optional leading space
			}
		}
		switch cl {
		case clLetter, clNumber, clOther:
			j := runEnd(s, i, cl, js)
			out = append(out, s[start:j])
			i = j
		default: // whitespace
			j, last := whitespaceEnd(s, i, js)
			if j < len(s) && j-last > i {
				j -= last // \s+(?!\S): leave the last space for the next word
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out
}

// splitLlama3 appends to out the matches of the Llama 3 / Qwen 2 pattern
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// with \s the Unicode White_Space property; maxDigits is 3 for Llama 3 and
// GPT-4 and 1 for Qwen (\p{N}). The pattern matches every character.
func splitLlama3(s string, maxDigits int, out []string) []string {
	const js = false
	i := 0
	for i < len(s) {
		c := s[i]
		if c == '\'' {
			if n := contraction(s, i, true); n > 0 {
				out = append(out, s[i:i+n])
				i += n
				continue
			}
		}
		cl, n := classAt(s, i, js)
		// [^\r\n\p{L}\p{N}]?\p{L}+
		if cl == clLetter {
			j := runEnd(s, i, clLetter, js)
			out = append(out, s[i:j])
			i = j
			continue
		}
		if cl != clNumber && c != '\r' && c != '\n' && i+n < len(s) {
			if ncl, _ := classAt(s, i+n, js); ncl == clLetter {
				j := runEnd(s, i+n, clLetter, js)
				out = append(out, s[i:j])
				i = j
				continue
			}
		}
		// \p{N}{1,maxDigits}
		if cl == clNumber {
			j := i
			for k := 0; k < maxDigits && j < len(s); k++ {
				ncl, m := classAt(s, j, js)
				if ncl != clNumber {
					break
				}
				j += m
			}
			out = append(out, s[i:j])
			i = j
			continue
		}
		// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
		start := i
		if c == ' ' && i+1 < len(s) {
			if ncl, _ := classAt(s, i+1, js); ncl == clOther {
				cl = clOther
				i++
			}
		}
		if cl == clOther {
			j := otherEnd(s, i, js)
			for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
				j++
			}
			out = append(out, s[start:j])
			i = j
			continue
		}
		// whitespace: \s*[\r\n]+ | \s+(?!\S) | \s+
		j, last := whitespaceEnd(s, i, js)
		nl := -1
		for k := j - 1; k >= i; k-- {
			if s[k] == '\r' || s[k] == '\n' {
				nl = k
				break
			}
		}
		if nl >= 0 {
			j = nl + 1
		} else if j < len(s) && j-last > i {
			j -= last
		}
		out = append(out, s[i:j])
		i = j
	}
	return out
}
