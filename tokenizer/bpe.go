package tokenizer

import (
	"math"
	"strings"
	"unicode/utf8"
)

// merge is the rank of a BPE merge and the id of the token it produces.
type merge struct{ rank, id int32 }

// pairKey packs two token ids into one map key.
func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// bpe is the byte-pair-encoding model. Symbols are token ids throughout: the
// merges are a map from id pairs to the merged id, so no strings are built
// while merging. A symbol that is not in the vocabulary has id -1; since every
// merge's parts are in the vocabulary (Load checks it), such a symbol never
// merges and leaves through byte fallback or the unknown token.
type bpe struct {
	merges       map[uint64]merge
	byteLevel    bool       // symbols start as bytes mapped through GPT-2's byte-to-unicode table
	byteIDs      [256]int32 // byte-level: id of each byte's character, -1 if absent
	fallback     [256]int32 // byte_fallback: id of <0xNN>, -1 if absent
	asciiIDs     [128]int32 // not byte-level: id of each ASCII character, -1 if absent
	byteFallback bool
	fuseUnk      bool
	ignoreMerges bool
	unk          int32 // -1: none
	// segment, when set, is a character (SentencePiece's "▁") that no
	// token has after a different character: no merge can join the text
	// before one to the text from it on, so a long word is encoded as the
	// segments that start at each one, which are short and cached. Files
	// without a pre-tokenizer otherwise hand BPE whole paragraphs.
	segment string
	// words maps a whole pre-token (raw bytes in byte-level mode) to its id,
	// for ignore_merges and for the single-symbol lookups.
	words map[string]int32
}

// heapThreshold is the symbol count from which merging uses a heap instead
// of scanning all pairs (quadratic but faster on short words).
const heapThreshold = 48

// maxCachedWord is the longest pre-token (bytes) whose ids are cached.
const maxCachedWord = 256

// maxCacheEntries bounds each encoder state's word cache.
const maxCacheEntries = 1 << 16

type cacheEntry struct{ off, n int32 }

// encodePiece appends the ids of one pre-token to out, segmented when the
// vocabulary allows (see bpe.segment).
func (m *bpe) encodePiece(word string, st *encState, out []int32, subStart int) []int32 {
	if m.segment == "" || len(word) <= maxCachedWord {
		return m.encodeWord(word, st, out, subStart)
	}
	seg := m.segment
	start := 0
	for i := len(seg); i < len(word); {
		k := strings.Index(word[i:], seg)
		if k < 0 {
			break
		}
		p := i + k
		if !strings.HasSuffix(word[:p], seg) {
			out = m.encodeWord(word[start:p], st, out, subStart)
			start = p
		}
		i = p + len(seg)
	}
	return m.encodeWord(word[start:], st, out, subStart)
}

// segmentSafe reports whether no token holds seg right after a different
// character, the condition for bpe.segment.
func segmentSafe(seg string, tokens map[string]int32) bool {
	for tok := range tokens {
		for i := 1; i < len(tok); {
			k := strings.Index(tok[i:], seg)
			if k < 0 {
				break
			}
			p := i + k
			if !strings.HasSuffix(tok[:p], seg) {
				return false
			}
			i = p + len(seg)
		}
	}
	return true
}

// encodeWord appends the ids of one pre-token to out. subStart is where the
// current model call began in out, for fuse_unk.
func (m *bpe) encodeWord(word string, st *encState, out []int32, subStart int) []int32 {
	if word == "" {
		return out
	}
	if m.ignoreMerges {
		if id, ok := m.words[word]; ok {
			return append(out, id)
		}
	}
	cacheable := len(word) <= maxCachedWord
	if cacheable {
		if e, ok := st.cache[word]; ok {
			if !m.fuseUnk {
				return append(out, st.arena[e.off:e.off+e.n]...)
			}
			for _, id := range st.arena[e.off : e.off+e.n] {
				out = m.emit(out, id, subStart)
			}
			return out
		}
	}
	syms, starts := st.syms[:0], st.starts[:0]
	if m.byteLevel {
		for i := 0; i < len(word); i++ {
			syms = append(syms, m.byteIDs[word[i]])
			starts = append(starts, int32(i))
		}
	} else {
		for i := 0; i < len(word); {
			if c := word[i]; c < utf8.RuneSelf {
				syms = append(syms, m.asciiIDs[c])
				starts = append(starts, int32(i))
				i++
				continue
			}
			_, n := utf8.DecodeRuneInString(word[i:])
			id, ok := m.words[word[i:i+n]]
			if !ok {
				id = -1
			}
			syms = append(syms, id)
			starts = append(starts, int32(i))
			i += n
		}
	}
	if len(syms) < heapThreshold {
		syms, starts = m.mergeLinear(syms, starts, st)
	} else {
		syms, starts = m.mergeHeap(syms, starts, st)
	}
	st.syms, st.starts = syms, starts
	begin := len(out)
	for k, id := range syms {
		if id >= 0 {
			out = append(out, id)
			continue
		}
		end := len(word)
		if k+1 < len(starts) {
			end = int(starts[k+1])
		}
		out = m.unknown(out, word[starts[k]:end], subStart)
	}
	if cacheable {
		if len(st.cache) >= maxCacheEntries {
			clear(st.cache)
			st.arena = st.arena[:0]
		}
		off := len(st.arena)
		st.arena = append(st.arena, out[begin:]...)
		st.cache[strings.Clone(word)] = cacheEntry{int32(off), int32(len(out) - begin)}
	}
	return out
}

// unknown appends the ids for a symbol missing from the vocabulary: its
// bytes as <0xNN> tokens when byte_fallback has them all, else the unknown
// token (fused with a preceding one under fuse_unk), else nothing.
func (m *bpe) unknown(out []int32, sym string, subStart int) []int32 {
	if m.byteFallback {
		ok := true
		for i := 0; i < len(sym); i++ {
			if m.fallback[sym[i]] < 0 {
				ok = false
				break
			}
		}
		if ok {
			for i := 0; i < len(sym); i++ {
				out = append(out, m.fallback[sym[i]])
			}
			return out
		}
	}
	if m.unk >= 0 {
		return m.emit(out, m.unk, subStart)
	}
	return out
}

// emit appends id, dropping an unknown token that follows another under fuse_unk.
func (m *bpe) emit(out []int32, id int32, subStart int) []int32 {
	if m.fuseUnk && id == m.unk && len(out) > subStart && out[len(out)-1] == m.unk {
		return out
	}
	return append(out, id)
}

func (m *bpe) rank(a, b int32) (merge, bool) {
	if a < 0 || b < 0 {
		return merge{}, false
	}
	mg, ok := m.merges[pairKey(a, b)]
	return mg, ok
}

// mergeLinear applies merges lowest rank first (leftmost on ties) by scanning
// the cached pair ranks of a short word.
func (m *bpe) mergeLinear(syms, starts []int32, st *encState) ([]int32, []int32) {
	n := len(syms)
	if n < 2 {
		return syms, starts
	}
	ranks, ids := st.ranks[:0], st.mids[:0]
	for i := 0; i+1 < n; i++ {
		mg, ok := m.rank(syms[i], syms[i+1])
		if !ok {
			mg.rank = math.MaxInt32
		}
		ranks = append(ranks, mg.rank)
		ids = append(ids, mg.id)
	}
	for {
		best, br := -1, int32(math.MaxInt32)
		for i, r := range ranks[:n-1] {
			if r < br {
				best, br = i, r
			}
		}
		if best < 0 {
			break
		}
		syms[best] = ids[best]
		copy(syms[best+1:], syms[best+2:n])
		copy(starts[best+1:], starts[best+2:n])
		copy(ranks[best:], ranks[best+1:n-1])
		copy(ids[best:], ids[best+1:n-1])
		n--
		if best > 0 {
			mg, ok := m.rank(syms[best-1], syms[best])
			if !ok {
				mg.rank = math.MaxInt32
			}
			ranks[best-1], ids[best-1] = mg.rank, mg.id
		}
		if best+1 < n {
			mg, ok := m.rank(syms[best], syms[best+1])
			if !ok {
				mg.rank = math.MaxInt32
			}
			ranks[best], ids[best] = mg.rank, mg.id
		}
		if n < 2 {
			break
		}
	}
	st.ranks, st.mids = ranks, ids
	return syms[:n], starts[:n]
}

// heapItem is a candidate merge of the symbol at pos with its successor.
type heapItem struct {
	rank, pos   int32
	left, right int32 // ids when pushed; a mismatch marks the item stale
}

func itemLess(a, b heapItem) bool {
	return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos)
}

func heapPush(h []heapItem, it heapItem) []heapItem {
	h = append(h, it)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !itemLess(h[i], h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	return h
}

func heapPop(h []heapItem) (heapItem, []heapItem) {
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		c := l
		if r := l + 1; r < len(h) && itemLess(h[r], h[l]) {
			c = r
		}
		if !itemLess(h[c], h[i]) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	return top, h
}

// mergeHeap applies merges in the same order as mergeLinear on a linked list
// with a priority queue, for long words (SentencePiece-style files have no
// pre-tokenizer, so a whole paragraph is one word).
func (m *bpe) mergeHeap(syms, starts []int32, st *encState) ([]int32, []int32) {
	n := len(syms)
	next, prev := st.next[:0], st.prev[:0]
	for i := 0; i < n; i++ {
		next = append(next, int32(i+1))
		prev = append(prev, int32(i-1))
	}
	next[n-1] = -1
	h := st.heap[:0]
	push := func(i int32) {
		j := next[i]
		if j < 0 {
			return
		}
		if mg, ok := m.rank(syms[i], syms[j]); ok {
			h = heapPush(h, heapItem{mg.rank, i, syms[i], syms[j]})
		}
	}
	for i := 0; i+1 < n; i++ {
		push(int32(i))
	}
	for len(h) > 0 {
		var it heapItem
		it, h = heapPop(h)
		i := it.pos
		j := next[i]
		if syms[i] != it.left || j < 0 || syms[j] != it.right {
			continue // stale
		}
		mg, _ := m.rank(syms[i], syms[j])
		syms[i] = mg.id
		syms[j] = -2 // removed
		next[i] = next[j]
		if next[j] >= 0 {
			prev[next[j]] = i
		}
		if prev[i] >= 0 {
			push(prev[i])
		}
		push(i)
	}
	k := 0
	for i := int32(0); i >= 0 && int(i) < n; i = next[i] {
		syms[k], starts[k] = syms[i], starts[i]
		k++
	}
	st.next, st.prev, st.heap = next, prev, h
	return syms[:k], starts[:k]
}
