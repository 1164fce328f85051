package model

import (
	"bytes"
	"testing"
)

func TestTokenizerRoundTrip(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	for _, s := range []string{"", "package main\n", "héllo, 世界", "\xff\xfe invalid utf-8 \x00", string(all)} {
		ids := Encode(s)
		if len(ids) != len(s) {
			t.Fatalf("Encode(%q): %d ids", s, len(ids))
		}
		for i, id := range ids {
			if id != int32(s[i]) {
				t.Fatalf("Encode(%q)[%d] = %d", s, i, id)
			}
		}
		if got := Decode(ids); got != s {
			t.Fatalf("Decode(Encode(%q)) = %q", s, got)
		}
		if b, ok := DecodeBytes(ids); !ok || !bytes.Equal(b, []byte(s)) {
			t.Fatalf("DecodeBytes(Encode(%q)) = %q, %v", s, b, ok)
		}
	}
}

func TestDecodeOutOfRange(t *testing.T) {
	ids := []int32{'a', -1, 'b', 256, 1 << 30, 'c'}
	if got, want := Decode(ids), "a\uFFFDb\uFFFD\uFFFDc"; got != want {
		t.Fatalf("Decode = %q, want %q", got, want)
	}
	if b, ok := DecodeBytes(ids); ok || string(b) != "abc" {
		t.Fatalf("DecodeBytes = %q, %v", b, ok)
	}
}
