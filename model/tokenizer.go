package model

import "unicode/utf8"

// VocabSize is the size of the byte-level vocabulary: token i is byte i.
const VocabSize = 256

// Encode returns the byte-level tokens of s: one token per byte, so any
// string, valid UTF-8 or not, encodes and decodes back exactly.
func Encode(s string) []int32 {
	ids := make([]int32, len(s))
	for i := 0; i < len(s); i++ {
		ids[i] = int32(s[i])
	}
	return ids
}

// Decode turns byte-level tokens back into a string. Ids outside
// [0, VocabSize) cannot come from Encode or from a model with this
// vocabulary; rather than fail (generation output is for printing), each is
// written as U+FFFD, the Unicode replacement character. Use DecodeBytes to
// detect them.
func Decode(ids []int32) string {
	b := make([]byte, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id >= VocabSize {
			b = utf8.AppendRune(b, utf8.RuneError)
			continue
		}
		b = append(b, byte(id))
	}
	return string(b)
}

// DecodeBytes turns byte-level tokens back into bytes; ok is false when
// some id was outside [0, VocabSize) (those are skipped).
func DecodeBytes(ids []int32) (b []byte, ok bool) {
	b = make([]byte, 0, len(ids))
	ok = true
	for _, id := range ids {
		if id < 0 || id >= VocabSize {
			ok = false
			continue
		}
		b = append(b, byte(id))
	}
	return b, ok
}
