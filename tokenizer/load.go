package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dlclark/regexp2"
	"github.com/galleon-ml/galleon/internal/safetensors"
	"golang.org/x/text/unicode/norm"
)

// maxVocab bounds token ids, so a hostile file cannot make Load allocate
// without limit; ids must also be dense (at most about twice the number of
// tokens), as every real file's are.
const maxVocab = 1 << 24

type fileJSON struct {
	AddedTokens   []addedJSON     `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

type addedJSON struct {
	ID         *int64 `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	Lstrip     bool   `json:"lstrip"`
	Rstrip     bool   `json:"rstrip"`
	Normalized *bool  `json:"normalized"`
	Special    bool   `json:"special"`
}

type patternJSON struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

// componentJSON holds the fields of every normalizer, pre-tokenizer,
// post-processor and decoder galleon implements.
type componentJSON struct {
	Type           string            `json:"type"`
	Normalizers    []json.RawMessage `json:"normalizers"`
	Pretokenizers  []json.RawMessage `json:"pretokenizers"`
	Decoders       []json.RawMessage `json:"decoders"`
	Processors     []json.RawMessage `json:"processors"`
	Prepend        string            `json:"prepend"`
	Pattern        *patternJSON      `json:"pattern"`
	Content        string            `json:"content"`
	Start          int               `json:"start"`
	Stop           int               `json:"stop"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
	UseRegex       *bool             `json:"use_regex"`
	Replacement    *string           `json:"replacement"`
	PrependScheme  *string           `json:"prepend_scheme"`
	Behavior       string            `json:"behavior"`
	Invert         bool              `json:"invert"`
	Individual     bool              `json:"individual_digits"`
	StripLeft      bool              `json:"strip_left"`
	StripRight     bool              `json:"strip_right"`
	Single         []templateItem    `json:"single"`
	SpecialTokens  map[string]struct {
		IDs []int64 `json:"ids"`
	} `json:"special_tokens"`
}

type templateItem struct {
	SpecialToken *struct {
		ID string `json:"id"`
	} `json:"SpecialToken"`
	Sequence *struct {
		ID string `json:"id"`
	} `json:"Sequence"`
}

type modelJSON struct {
	Type                    string           `json:"type"`
	Vocab                   map[string]int64 `json:"vocab"`
	Merges                  json.RawMessage  `json:"merges"`
	UnkToken                *string          `json:"unk_token"`
	ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
	FuseUnk                 bool             `json:"fuse_unk"`
	ByteFallback            bool             `json:"byte_fallback"`
	IgnoreMerges            bool             `json:"ignore_merges"`
	Dropout                 *float64         `json:"dropout"`
}

type configJSON struct {
	BOS                        json.RawMessage `json:"bos_token"`
	EOS                        json.RawMessage `json:"eos_token"`
	PAD                        json.RawMessage `json:"pad_token"`
	UNK                        json.RawMessage `json:"unk_token"`
	AddBOS                     *bool           `json:"add_bos_token"`
	AddEOS                     *bool           `json:"add_eos_token"`
	ChatTemplate               json.RawMessage `json:"chat_template"`
	CleanUpTokenizationSpaces  *bool           `json:"clean_up_tokenization_spaces"`
	RemoveSpace                *bool           `json:"remove_space"`
	DoLowercaseAndRemoveAccent *bool           `json:"do_lowercase_and_remove_accent"`
}

// readRegular reads path if it is a regular file: stat first and open
// non-blocking, so that a FIFO returns an error instead of blocking.
func readRegular(path string) ([]byte, error) {
	f, _, err := safetensors.OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// Load reads dir/tokenizer.json and, when present, dir/tokenizer_config.json.
func Load(dir string) (*Tokenizer, error) {
	tj, err := readRegular(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	cj, err := readRegular(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		cj = nil
	}
	return FromJSON(tj, cj)
}

func isNull(m json.RawMessage) bool {
	m = bytes.TrimSpace(m)
	return len(m) == 0 || string(m) == "null"
}

// tokenString reads a tokenizer_config.json token entry: a string or an
// object with "content".
func tokenString(m json.RawMessage) (string, bool) {
	if isNull(m) {
		return "", false
	}
	var s string
	if json.Unmarshal(m, &s) == nil {
		return s, true
	}
	var o struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(m, &o) == nil && o.Content != "" {
		return o.Content, true
	}
	return "", false
}

// FromJSON builds a tokenizer from the contents of tokenizer.json and
// tokenizer_config.json (config may be nil).
func FromJSON(tokenizerJSON, configJSON_ []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(tokenizerJSON, &f); err != nil {
		return nil, fmt.Errorf("tokenizer: tokenizer.json: %w", err)
	}
	var cfg configJSON
	if len(bytes.TrimSpace(configJSON_)) > 0 {
		if err := json.Unmarshal(configJSON_, &cfg); err != nil {
			return nil, fmt.Errorf("tokenizer: tokenizer_config.json: %w", err)
		}
	}
	if cfg.RemoveSpace != nil && *cfg.RemoveSpace {
		return nil, errors.New("tokenizer: tokenizer_config.json: remove_space is not implemented")
	}
	if cfg.DoLowercaseAndRemoveAccent != nil && *cfg.DoLowercaseAndRemoveAccent {
		return nil, errors.New("tokenizer: tokenizer_config.json: do_lowercase_and_remove_accent is not implemented")
	}
	t := &Tokenizer{bos: -1, eos: -1, pad: -1, unk: -1, cleanUp: true}
	if cfg.CleanUpTokenizationSpaces != nil {
		t.cleanUp = *cfg.CleanUpTokenizationSpaces
	}
	if err := t.loadModel(f.Model); err != nil {
		return nil, err
	}
	if err := t.loadAdded(f.AddedTokens); err != nil {
		return nil, err
	}
	var err error
	if t.normalizer, err = buildNormalizer(f.Normalizer, 0); err != nil {
		return nil, err
	}
	if t.preTokenizer, err = t.buildPreTokenizer(f.PreTokenizer, 0); err != nil {
		return nil, err
	}
	if t.decoder, err = buildDecoder(f.Decoder, 0); err != nil {
		return nil, err
	}
	// Byte-level models see the text as GPT-2's byte characters; galleon
	// keeps the bytes and starts BPE from each byte's token.
	t.model.byteLevel = t.hasByteLevel
	t.finishAdded()
	// Special token ids from the config, then the model's unk.
	lookup := func(m json.RawMessage) int32 {
		if s, ok := tokenString(m); ok {
			if id, ok := t.tokenToID[s]; ok {
				return id
			}
		}
		return -1
	}
	t.bos, t.eos, t.pad = lookup(cfg.BOS), lookup(cfg.EOS), lookup(cfg.PAD)
	if id := lookup(cfg.UNK); id >= 0 {
		t.unk = id
	} else {
		t.unk = t.model.unk
	}
	if t.post, err = t.buildPostProcessor(f.PostProcessor, 0); err != nil {
		return nil, err
	}
	if t.post == nil {
		fp := flagProcessor{bos: -1, eos: -1}
		if cfg.AddBOS != nil && *cfg.AddBOS {
			fp.bos = t.bos
		}
		if cfg.AddEOS != nil && *cfg.AddEOS {
			fp.eos = t.eos
		}
		if fp.bos >= 0 || fp.eos >= 0 {
			t.post = fp
		}
	}
	if !isNull(cfg.ChatTemplate) {
		if err := json.Unmarshal(cfg.ChatTemplate, &t.chatTemplate); err != nil {
			// A list of named templates: use "default".
			var named []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			if err := json.Unmarshal(cfg.ChatTemplate, &named); err != nil {
				return nil, fmt.Errorf("tokenizer: tokenizer_config.json: chat_template: %w", err)
			}
			for _, n := range named {
				if n.Name == "default" {
					t.chatTemplate = n.Template
				}
			}
		}
	}
	t.bosText, _ = tokenString(cfg.BOS)
	t.eosText, _ = tokenString(cfg.EOS)
	t.pool.New = func() any { return newEncState() }
	return t, nil
}

func (t *Tokenizer) loadModel(raw json.RawMessage) error {
	if isNull(raw) {
		return errors.New("tokenizer: tokenizer.json has no model")
	}
	var mj modelJSON
	if err := json.Unmarshal(raw, &mj); err != nil {
		return fmt.Errorf("tokenizer: model: %w", err)
	}
	if mj.Type != "BPE" && !(mj.Type == "" && mj.Merges != nil) {
		return fmt.Errorf("tokenizer: model type %q is not implemented (only BPE)", mj.Type)
	}
	if mj.Dropout != nil && *mj.Dropout != 0 {
		return errors.New("tokenizer: BPE dropout is not implemented")
	}
	if mj.ContinuingSubwordPrefix != nil && *mj.ContinuingSubwordPrefix != "" {
		return errors.New("tokenizer: BPE continuing_subword_prefix is not implemented")
	}
	if mj.EndOfWordSuffix != nil && *mj.EndOfWordSuffix != "" {
		return errors.New("tokenizer: BPE end_of_word_suffix is not implemented")
	}
	if len(mj.Vocab) == 0 {
		return errors.New("tokenizer: model has an empty vocabulary")
	}
	maxID := int64(-1)
	for tok, id := range mj.Vocab {
		if id < 0 || id >= maxVocab || id > 2*int64(len(mj.Vocab))+1024 {
			return fmt.Errorf("tokenizer: token %q has id %d out of range", tok, id)
		}
		maxID = max(maxID, id)
	}
	t.idToToken = make([]string, maxID+1)
	t.hasID = make([]bool, maxID+1)
	t.tokenToID = make(map[string]int32, len(mj.Vocab))
	for tok, id := range mj.Vocab {
		if t.hasID[id] {
			return fmt.Errorf("tokenizer: id %d is given to both %q and %q", id, t.idToToken[id], tok)
		}
		t.idToToken[id], t.hasID[id] = tok, true
		t.tokenToID[tok] = int32(id)
	}
	m := &bpe{unk: -1, fuseUnk: mj.FuseUnk, byteFallback: mj.ByteFallback, ignoreMerges: mj.IgnoreMerges}
	if mj.UnkToken != nil {
		id, ok := t.tokenToID[*mj.UnkToken]
		if !ok {
			return fmt.Errorf("tokenizer: unk_token %q is not in the vocabulary", *mj.UnkToken)
		}
		m.unk = id
	}
	for b := 0; b < 256; b++ {
		m.fallback[b] = -1
		if id, ok := t.tokenToID[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.fallback[b] = id
		}
	}
	for b := 0; b < 256; b++ {
		m.byteIDs[b] = -1
		if id, ok := t.tokenToID[string(bytesToUnicode[b])]; ok {
			m.byteIDs[b] = id
		}
	}
	merges, err := parseMerges(mj.Merges)
	if err != nil {
		return err
	}
	m.merges = make(map[uint64]merge, len(merges))
	for rank, p := range merges {
		a, okA := t.tokenToID[p[0]]
		b, okB := t.tokenToID[p[1]]
		c, okC := t.tokenToID[p[0]+p[1]]
		if !okA || !okB || !okC {
			return fmt.Errorf("tokenizer: merge %d (%q %q) uses a token missing from the vocabulary", rank, p[0], p[1])
		}
		k := pairKey(a, b)
		if _, dup := m.merges[k]; dup {
			continue // the first (lowest) rank wins
		}
		m.merges[k] = merge{int32(rank), c}
	}
	t.model = m
	return nil
}

// parseMerges reads merges as "a b" strings or [a, b] pairs.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		out := make([][2]string, len(strs))
		for i, s := range strs {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("tokenizer: merge %d %q is not two tokens separated by a space", i, s)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("tokenizer: merges: %w", err)
	}
	out := make([][2]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("tokenizer: merge %d has %d parts, want 2", i, len(p))
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

func (t *Tokenizer) loadAdded(added []addedJSON) error {
	t.addedByContent = map[string]addedToken{}
	for _, a := range added {
		if a.ID == nil || *a.ID < 0 || *a.ID >= maxVocab || *a.ID > 2*int64(len(t.idToToken)+len(added))+1024 {
			return fmt.Errorf("tokenizer: added token %q has a missing or out-of-range id", a.Content)
		}
		if a.Content == "" {
			return fmt.Errorf("tokenizer: added token %d is empty", *a.ID)
		}
		id := *a.ID
		for int64(len(t.idToToken)) <= id {
			t.idToToken = append(t.idToToken, "")
			t.hasID = append(t.hasID, false)
		}
		if t.hasID[id] && t.idToToken[id] != a.Content {
			return fmt.Errorf("tokenizer: added token %q has id %d, already %q", a.Content, id, t.idToToken[id])
		}
		t.idToToken[id], t.hasID[id] = a.Content, true
		t.tokenToID[a.Content] = int32(id)
		normalized := !a.Special
		if a.Normalized != nil {
			normalized = *a.Normalized
		}
		at := addedToken{id: int32(id), content: a.Content, lstrip: a.Lstrip, rstrip: a.Rstrip, normalized: normalized, special: a.Special}
		t.added = append(t.added, at)
		t.addedByContent[a.Content] = at
	}
	return nil
}

// finishAdded builds the two added-token splitters once the normalizer is
// known: normalized tokens are looked for in normalized text.
func (t *Tokenizer) finishAdded() {
	var raw, normed []string
	t.specialIDs = map[int32]bool{}
	for _, a := range t.added {
		if a.special {
			t.specialIDs[a.id] = true
		}
		if a.normalized && t.normalizer != nil {
			n := t.normalizer.normalize(a.content)
			normed = append(normed, n)
			t.addedByContent[n] = a
		} else {
			raw = append(raw, a.content)
		}
	}
	t.rawTrie, t.normTrie = newTrie(raw), newTrie(normed)
	// Byte-level ignore_merges compares raw text with tokens: map every
	// token's bytes to its id. Other models look symbols up by text.
	m := t.model
	if m.byteLevel {
		m.words = make(map[string]int32, len(t.tokenToID))
		for tok, id := range t.tokenToID {
			if b, ok := rawBytes(tok); ok {
				if _, dup := m.words[b]; !dup || t.idToToken[id] == tok {
					m.words[b] = id
				}
			}
		}
	} else {
		m.words = t.tokenToID
		for c := range m.asciiIDs {
			m.asciiIDs[c] = -1
			if id, ok := m.words[string(rune(c))]; ok {
				m.asciiIDs[c] = id
			}
		}
		if _, ok := t.tokenToID["\u2581"]; ok && segmentSafe("\u2581", m.words) {
			m.segment = "\u2581"
		}
	}
}

const maxDepth = 16

// regexTimeout stops a backtracking pattern from a hostile file running away.
const regexTimeout = 5 * time.Second

func decodeComponent(raw json.RawMessage, what string, depth int) (*componentJSON, error) {
	if isNull(raw) {
		return nil, nil
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("tokenizer: %s nested too deeply", what)
	}
	var c componentJSON
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", what, err)
	}
	return &c, nil
}

func buildNormalizer(raw json.RawMessage, depth int) (normalizer, error) {
	c, err := decodeComponent(raw, "normalizer", depth)
	if c == nil || err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var q seqNormalizer
		for _, r := range c.Normalizers {
			n, err := buildNormalizer(r, depth+1)
			if err != nil {
				return nil, err
			}
			if n != nil {
				q = append(q, n)
			}
		}
		return q, nil
	case "Prepend":
		return prependNormalizer(c.Prepend), nil
	case "Replace":
		if c.Pattern == nil {
			return nil, errors.New("tokenizer: Replace normalizer has no pattern")
		}
		if c.Pattern.String != nil {
			if *c.Pattern.String == "" {
				return nil, errors.New("tokenizer: Replace normalizer has an empty pattern")
			}
			return replaceNormalizer{old: *c.Pattern.String, new: c.Content}, nil
		}
		if c.Pattern.Regex != nil {
			re, err := regexp2.Compile(*c.Pattern.Regex, regexp2.Unicode)
			if err != nil {
				return nil, fmt.Errorf("tokenizer: Replace normalizer pattern: %w", err)
			}
			re.MatchTimeout = regexTimeout
			return replaceNormalizer{re: re, new: c.Content}, nil
		}
		return nil, errors.New("tokenizer: Replace normalizer has no pattern")
	case "NFC":
		return unicodeNormalizer{norm.NFC}, nil
	case "NFD":
		return unicodeNormalizer{norm.NFD}, nil
	case "NFKC":
		return unicodeNormalizer{norm.NFKC}, nil
	case "NFKD":
		return unicodeNormalizer{norm.NFKD}, nil
	case "Lowercase":
		return lowercaseNormalizer{}, nil
	case "Strip":
		return stripNormalizer{c.StripLeft, c.StripRight}, nil
	}
	return nil, fmt.Errorf("tokenizer: normalizer %q is not implemented", c.Type)
}

func (t *Tokenizer) buildPreTokenizer(raw json.RawMessage, depth int) (preTokenizer, error) {
	c, err := decodeComponent(raw, "pre_tokenizer", depth)
	if c == nil || err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var q seqPreTokenizer
		for i, r := range c.Pretokenizers {
			p, err := t.buildPreTokenizer(r, depth+1)
			if err != nil {
				return nil, err
			}
			if _, ok := p.(byteLevelPreTokenizer); ok && i != len(c.Pretokenizers)-1 {
				return nil, errors.New("tokenizer: a pre-tokenizer after ByteLevel in a Sequence is not implemented")
			}
			if p != nil {
				q = append(q, p)
			}
		}
		return q, nil
	case "ByteLevel":
		t.hasByteLevel = true
		b := byteLevelPreTokenizer{useRegex: true}
		if c.AddPrefixSpace != nil {
			b.addPrefixSpace = *c.AddPrefixSpace
		}
		if c.UseRegex != nil {
			b.useRegex = *c.UseRegex
		}
		return b, nil
	case "Split":
		p := &splitPreTokenizer{invert: c.Invert}
		switch strings.ToLower(c.Behavior) {
		case "isolated":
		case "removed":
			p.removed = true
		default:
			if !c.Invert {
				return nil, fmt.Errorf("tokenizer: Split behavior %q is not implemented", c.Behavior)
			}
		}
		if c.Pattern == nil {
			return nil, errors.New("tokenizer: Split pre-tokenizer has no pattern")
		}
		switch {
		case c.Pattern.String != nil:
			p.kind, p.str = patString, *c.Pattern.String
		case c.Pattern.Regex != nil:
			switch *c.Pattern.Regex {
			case gpt2Pattern:
				p.kind = patGPT2
			case llama3Pattern:
				p.kind = patLlama3
			case qwenPattern:
				p.kind = patQwen
			default:
				re, err := regexp2.Compile(*c.Pattern.Regex, regexp2.Unicode)
				if err != nil {
					return nil, fmt.Errorf("tokenizer: Split pattern: %w", err)
				}
				re.MatchTimeout = regexTimeout
				p.kind, p.re = patRegexp, re
			}
		default:
			return nil, errors.New("tokenizer: Split pre-tokenizer has no pattern")
		}
		return p, nil
	case "Digits":
		return digitsPreTokenizer{c.Individual}, nil
	case "Metaspace":
		m := metaspacePreTokenizer{replacement: "\u2581", scheme: "always"}
		if c.Replacement != nil {
			m.replacement = *c.Replacement
		}
		if c.PrependScheme != nil {
			m.scheme = *c.PrependScheme
		}
		switch m.scheme {
		case "always", "first", "never":
		default:
			return nil, fmt.Errorf("tokenizer: Metaspace prepend_scheme %q is not implemented", m.scheme)
		}
		return m, nil
	}
	return nil, fmt.Errorf("tokenizer: pre-tokenizer %q is not implemented", c.Type)
}

func (t *Tokenizer) buildPostProcessor(raw json.RawMessage, depth int) (postProcessor, error) {
	c, err := decodeComponent(raw, "post_processor", depth)
	if c == nil || err != nil {
		return nil, err
	}
	switch c.Type {
	case "ByteLevel":
		return nil, nil // offsets only; ids are unchanged
	case "Sequence":
		var found postProcessor
		for _, r := range c.Processors {
			p, err := t.buildPostProcessor(r, depth+1)
			if err != nil {
				return nil, err
			}
			if p != nil {
				if found != nil {
					return nil, errors.New("tokenizer: two post-processors that add tokens in a Sequence are not implemented")
				}
				found = p
			}
		}
		return found, nil
	case "TemplateProcessing":
		var p templateProcessor
		for _, it := range c.Single {
			switch {
			case it.SpecialToken != nil:
				id, ok := t.tokenToID[it.SpecialToken.ID]
				if !ok {
					return nil, fmt.Errorf("tokenizer: TemplateProcessing special token %q is not in the vocabulary", it.SpecialToken.ID)
				}
				p.items = append(p.items, []int32{id})
			case it.Sequence != nil:
				p.items = append(p.items, nil)
			default:
				return nil, errors.New("tokenizer: TemplateProcessing item is neither SpecialToken nor Sequence")
			}
		}
		return p, nil
	}
	return nil, fmt.Errorf("tokenizer: post-processor %q is not implemented", c.Type)
}

func buildDecoder(raw json.RawMessage, depth int) (decoder, error) {
	c, err := decodeComponent(raw, "decoder", depth)
	if c == nil || err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var q seqDecoder
		for _, r := range c.Decoders {
			d, err := buildDecoder(r, depth+1)
			if err != nil {
				return nil, err
			}
			if d != nil {
				q = append(q, d)
			}
		}
		return q, nil
	case "ByteLevel":
		return byteLevelDecoder{}, nil
	case "ByteFallback":
		return byteFallbackDecoder{}, nil
	case "Fuse":
		return fuseDecoder{}, nil
	case "Strip":
		return stripDecoder{c.Content, c.Start, c.Stop}, nil
	case "Replace":
		if c.Pattern == nil || c.Pattern.String == nil || *c.Pattern.String == "" {
			return nil, errors.New("tokenizer: Replace decoder needs a String pattern")
		}
		return replaceDecoder{*c.Pattern.String, c.Content}, nil
	case "Metaspace":
		d := metaspaceDecoder{replacement: "\u2581"}
		if c.Replacement != nil {
			d.replacement = *c.Replacement
		}
		return d, nil
	}
	return nil, fmt.Errorf("tokenizer: decoder %q is not implemented", c.Type)
}
