package tokenizer

import (
	"strings"

	"github.com/dlclark/regexp2"
	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites a section of text before pre-tokenization.
type normalizer interface{ normalize(s string) string }

type seqNormalizer []normalizer

func (q seqNormalizer) normalize(s string) string {
	for _, n := range q {
		s = n.normalize(s)
	}
	return s
}

type prependNormalizer string

func (p prependNormalizer) normalize(s string) string { return string(p) + s }

type replaceNormalizer struct {
	old, new string
	re       *regexp2.Regexp
}

func (r replaceNormalizer) normalize(s string) string {
	if r.re != nil {
		out, err := r.re.Replace(s, r.new, -1, -1)
		if err != nil {
			return s
		}
		return out
	}
	return strings.ReplaceAll(s, r.old, r.new)
}

type unicodeNormalizer struct{ form norm.Form }

func (u unicodeNormalizer) normalize(s string) string {
	if u.form.IsNormalString(s) {
		return s // most text already is; this check does not allocate
	}
	return u.form.String(s)
}

type lowercaseNormalizer struct{}

func (lowercaseNormalizer) normalize(s string) string { return strings.ToLower(s) }

type stripNormalizer struct{ left, right bool }

func (p stripNormalizer) normalize(s string) string {
	if p.left {
		s = trimLeftJS(s)
	}
	if p.right {
		s = trimRightJS(s)
	}
	return s
}

// isJSSpace is JavaScript's WhiteSpace and LineTerminator set, which
// String.prototype.trim and \s use.
func isJSSpace(r rune) bool { return runeClass(r, true) == clSpace }

func trimLeftJS(s string) string  { return strings.TrimLeftFunc(s, isJSSpace) }
func trimRightJS(s string) string { return strings.TrimRightFunc(s, isJSSpace) }

// preTokenizer splits each piece of in and appends the results to out.
// section is the index of the piece's section in the text split on added
// tokens, which Metaspace's prepend_scheme "first" consults.
type preTokenizer interface {
	split(in []string, section int, out []string, st *encState) []string
}

type seqPreTokenizer []preTokenizer

func (q seqPreTokenizer) split(in []string, section int, out []string, st *encState) []string {
	cur := in
	for k, p := range q {
		if k == len(q)-1 {
			return p.split(cur, section, out, st)
		}
		buf := st.pieces2[:0]
		if k%2 == 1 {
			buf = st.pieces3[:0]
		}
		buf = p.split(cur, section, buf, st)
		if k%2 == 1 {
			st.pieces3 = buf
		} else {
			st.pieces2 = buf
		}
		cur = buf
	}
	return append(out, cur...)
}

// byteLevelPreTokenizer splits with GPT-2's pattern when useRegex is set; the
// byte-to-unicode mapping itself happens in the model, which works on bytes.
type byteLevelPreTokenizer struct{ addPrefixSpace, useRegex bool }

func (b byteLevelPreTokenizer) split(in []string, _ int, out []string, _ *encState) []string {
	for _, s := range in {
		if b.addPrefixSpace && !strings.HasPrefix(s, " ") {
			s = " " + s
		}
		if b.useRegex {
			out = splitGPT2(s, out)
		} else {
			out = append(out, s)
		}
	}
	return out
}

// Kinds of split pattern.
const (
	patRegexp = iota // any other regex, through regexp2
	patGPT2
	patLlama3
	patQwen
	patString
)

// Patterns recognized and split by hand (split.go); they are the hot path.
const (
	gpt2Pattern   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwenPattern   = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// splitPreTokenizer is the Split pre-tokenizer with behavior Isolated or
// Removed, or invert (keep the matches only).
type splitPreTokenizer struct {
	kind    int
	str     string
	re      *regexp2.Regexp
	removed bool
	invert  bool
}

// matches appends the [start, end) byte ranges of the pattern's matches in s.
func (p *splitPreTokenizer) matches(s string, st *encState) [][2]int {
	ms := st.ranges[:0]
	switch p.kind {
	case patGPT2, patLlama3, patQwen:
		// The hand-written splitters tile s with their matches.
		var parts []string
		switch p.kind {
		case patGPT2:
			parts = splitGPT2(s, st.pieces4[:0])
		case patLlama3:
			parts = splitLlama3(s, 3, st.pieces4[:0])
		default:
			parts = splitLlama3(s, 1, st.pieces4[:0])
		}
		st.pieces4 = parts
		off := 0
		for _, q := range parts {
			ms = append(ms, [2]int{off, off + len(q)})
			off += len(q)
		}
	case patString:
		if p.str == "" {
			break
		}
		for off := 0; ; {
			k := strings.Index(s[off:], p.str)
			if k < 0 {
				break
			}
			ms = append(ms, [2]int{off + k, off + k + len(p.str)})
			off += k + len(p.str)
		}
	default:
		ms = regexpMatches(p.re, s, ms)
	}
	st.ranges = ms
	return ms
}

// regexpMatches runs a regexp2 pattern over s. regexp2 reports rune offsets,
// converted here to byte offsets. The offsets come from ranging over s
// itself: an invalid byte is one U+FFFD rune but one byte of s, not the
// three bytes of U+FFFD's encoding.
func regexpMatches(re *regexp2.Regexp, s string, ms [][2]int) [][2]int {
	runes := make([]rune, 0, len(s))
	byteOff := make([]int, 0, len(s)+1)
	for i, r := range s {
		runes = append(runes, r)
		byteOff = append(byteOff, i)
	}
	byteOff = append(byteOff, len(s))
	m, err := re.FindRunesMatch(runes)
	for err == nil && m != nil {
		if m.Length > 0 {
			ms = append(ms, [2]int{byteOff[m.Index], byteOff[m.Index+m.Length]})
		}
		m, err = re.FindNextMatch(m)
	}
	return ms
}

func (p *splitPreTokenizer) split(in []string, _ int, out []string, st *encState) []string {
	for _, s := range in {
		if !p.removed {
			// The hand-written splitters tile s, so the isolated pieces
			// and the matches alone are the same list.
			switch p.kind {
			case patGPT2:
				out = splitGPT2(s, out)
				continue
			case patLlama3:
				out = splitLlama3(s, 3, out)
				continue
			case patQwen:
				out = splitLlama3(s, 1, out)
				continue
			}
		}
		ms := p.matches(s, st)
		if p.invert {
			for _, m := range ms {
				if m[1] > m[0] {
					out = append(out, s[m[0]:m[1]])
				}
			}
			continue
		}
		prev := 0
		for _, m := range ms {
			if m[0] > prev {
				out = append(out, s[prev:m[0]])
			}
			if !p.removed && m[1] > m[0] {
				out = append(out, s[m[0]:m[1]])
			}
			prev = m[1]
		}
		if prev < len(s) {
			out = append(out, s[prev:])
		}
	}
	return out
}

// digitsPreTokenizer splits runs of ASCII digits ([^\d]+|\d+ in JavaScript,
// where \d is ASCII) from the rest, or every digit alone.
type digitsPreTokenizer struct{ individual bool }

func (d digitsPreTokenizer) split(in []string, _ int, out []string, _ *encState) []string {
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	for _, s := range in {
		for i := 0; i < len(s); {
			j := i + 1
			if isDigit(s[i]) {
				if !d.individual {
					for j < len(s) && isDigit(s[j]) {
						j++
					}
				}
			} else {
				for j < len(s) && !isDigit(s[j]) {
					j++
				}
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out
}

// metaspacePreTokenizer replaces spaces with the replacement character and
// prepends one as prepend_scheme says (the reference keeps the piece whole).
type metaspacePreTokenizer struct {
	replacement string
	scheme      string // always, first, never
}

func (m metaspacePreTokenizer) split(in []string, section int, out []string, _ *encState) []string {
	for _, s := range in {
		s = strings.ReplaceAll(s, " ", m.replacement)
		if !strings.HasPrefix(s, m.replacement) && (m.scheme == "always" || (m.scheme == "first" && section == 0)) {
			s = m.replacement + s
		}
		out = append(out, s)
	}
	return out
}

// trie finds added tokens in text, leftmost then longest, as the reference's
// DictionarySplitter does.
type trie struct {
	first [256]bool
	nodes []trieNode
}

type trieNode struct {
	next map[byte]int32
	end  bool
}

func newTrie(words []string) *trie {
	t := &trie{nodes: []trieNode{{}}}
	for _, w := range words {
		if w == "" {
			continue
		}
		t.first[w[0]] = true
		n := int32(0)
		for i := 0; i < len(w); i++ {
			c, ok := t.nodes[n].next[w[i]]
			if !ok {
				if t.nodes[n].next == nil {
					t.nodes[n].next = map[byte]int32{}
				}
				c = int32(len(t.nodes))
				t.nodes[n].next[w[i]] = c
				t.nodes = append(t.nodes, trieNode{})
			}
			n = c
		}
		t.nodes[n].end = true
	}
	return t
}

func (t *trie) empty() bool { return len(t.nodes) == 1 }

// split appends to out the pieces of s: matched words and the text between them.
func (t *trie) split(s string, out []string) []string {
	start := 0
	for i := 0; i < len(s); {
		if !t.first[s[i]] {
			i++
			continue
		}
		n, match := int32(0), 0
		for j := i; j < len(s); j++ {
			c, ok := t.nodes[n].next[s[j]]
			if !ok {
				break
			}
			n = c
			if t.nodes[n].end {
				match = j + 1 - i
			}
		}
		if match == 0 {
			i++
			continue
		}
		if i > start {
			out = append(out, s[start:i])
		}
		out = append(out, s[i:i+match])
		i += match
		start = i
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// postProcessor adds the special tokens of a single sequence.
type postProcessor interface{ process(ids []int32) []int32 }

// templateProcessor is TemplateProcessing's single template: special ids
// around the sequence (a nil entry marks the sequence).
type templateProcessor struct{ items [][]int32 }

func (p templateProcessor) process(ids []int32) []int32 {
	n := len(ids)
	for _, it := range p.items {
		n += len(it)
	}
	out := make([]int32, 0, n)
	for _, it := range p.items {
		if it == nil {
			out = append(out, ids...)
		} else {
			out = append(out, it...)
		}
	}
	return out
}

// flagProcessor adds bos/eos as tokenizer_config.json's add_bos_token and
// add_eos_token say, for files whose post-processor adds nothing.
type flagProcessor struct{ bos, eos int32 }

func (p flagProcessor) process(ids []int32) []int32 {
	out := make([]int32, 0, len(ids)+2)
	if p.bos >= 0 {
		out = append(out, p.bos)
	}
	out = append(out, ids...)
	if p.eos >= 0 {
		out = append(out, p.eos)
	}
	return out
}
