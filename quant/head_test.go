package quant

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/galleon-ml/galleon/model"
)

// TestDefaultConfig: the documented defaults are what the constructors
// return, and Quantize passes the threshold on to every layer.
func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.Act != ActDynamic || c.Threshold != 6 || c.Head || c.Embeddings || len(c.Layers) != 0 {
		t.Fatalf("DefaultConfig() = %+v", c)
	}
	if o := DefaultLinearOptions(); o.Act != ActDynamic || o.Threshold != 6 || o.ActScale != 0 {
		t.Fatalf("DefaultLinearOptions() = %+v", o)
	}
	m, _ := testModel(t, 0)
	q, err := Quantize(m, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range q.Linears {
		if l.Threshold != DefaultThreshold || l.Act != ActDynamic {
			t.Errorf("%s: act %v threshold %v", name, l.Act, l.Threshold)
		}
	}
}

// TestInt8HeadTied runs a tied output head on the int8 GEMM: the head is a
// layer over the token embedding's per-row int8 table (the same table when
// the embeddings are quantized), its logits stay close to float32 and
// differ from the float32 head's, Evaluate and Generate run, and the
// checkpoint keeps the tied configuration, stores no head tensor and loads
// to the same logits, also after ReleaseReplaced.
func TestInt8HeadTied(t *testing.T) {
	m, data := testModel(t, 5)
	if !m.Config.TiedEmbeddings {
		t.Fatal("the test model should be tied")
	}
	T := m.Config.SeqLen
	in, tg := windows(t, data, 4, T)
	ref, err := m.Logits(in, 4, T)
	if err != nil {
		t.Fatal(err)
	}
	scales, err := Calibrate(m, in, T, 2, nil, func() Observer { return &MinMax{} })
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	static := Config{Act: ActStatic, ActScales: scales, Embeddings: true}
	for i, cfg := range []Config{DefaultConfig(), {Act: ActDynamic, Embeddings: true}, {Act: ActFloat}, static} {
		floatHead, err := Quantize(m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Head = true
		q, err := Quantize(m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		h := q.Linears[model.NameHead]
		if h == nil || q.Model.Config.TiedEmbeddings || !q.Config.Head || slices.Contains(q.Config.Layers, model.NameHead) {
			t.Fatalf("%d: head %v, model tied %v, config %+v", i, h, q.Model.Config.TiedEmbeddings, q.Config)
		}
		wantAct := cfg.Act
		if cfg.Act == ActStatic {
			wantAct = ActDynamic // no calibrated scale for a tied head
		}
		if h.Act != wantAct || h.Threshold != cfg.Threshold || h.Bias != nil || h.In != m.Config.DModel || h.Out != m.Config.Vocab {
			t.Fatalf("%d: head %d→%d act %v threshold %v", i, h.In, h.Out, h.Act, h.Threshold)
		}
		if e := q.Embeddings[model.NameWTE+".weight"]; cfg.Embeddings && e != h.Weight {
			t.Fatalf("%d: the head does not share the embedding's int8 table", i)
		}
		got, err := q.Logits(in, 4, T)
		if err != nil {
			t.Fatal(err)
		}
		fh, err := floatHead.Logits(in, 4, T)
		if err != nil {
			t.Fatal(err)
		}
		d, s := maxAbsDiff(ref, got)
		dh, _ := maxAbsDiff(fh, got)
		t.Logf("%d %v: max |Δlogit| vs fp32 %.3g, vs float32 head %.3g (max |logit| %.3g)", i, cfg.Act, d, dh, s)
		if d > 0.1*s {
			t.Fatalf("%d: int8-head logits differ by %v (scale %v)", i, d, s)
		}
		if cfg.Act != ActFloat && dh == 0 {
			t.Fatalf("%d: the int8 head gave the float32 head's logits exactly", i)
		}
		if _, err := q.Evaluate(in, tg, T, 2); err != nil {
			t.Fatal(err)
		}
		out, err := q.Generate(context.Background(), model.Encode("ab"), 8, model.SampleOptions{})
		if err != nil || len(out) == 0 {
			t.Fatalf("generate: %v, %d tokens", err, len(out))
		}
		path := filepath.Join(dir, "head.safetensors")
		if err := q.Save(path); err != nil {
			t.Fatal(err)
		}
		f, err := safetensors.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(f.Metadata[metaConfig], `"tie_word_embeddings":true`) || !strings.Contains(f.Metadata[metaQuant], `"int8_head":true`) {
			t.Fatalf("%d: metadata %v", i, f.Metadata)
		}
		for _, ts := range f.Tensors {
			if strings.HasPrefix(ts.Name, model.NameHead) {
				t.Fatalf("%d: the checkpoint stores %q", i, ts.Name)
			}
		}
		for _, release := range []bool{false, true} {
			if release {
				if _, err := q.ReleaseReplaced(); err != nil {
					t.Fatal(err)
				}
				if err := q.Save(path); err != nil {
					t.Fatal(err)
				}
			}
			l, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if !l.Config.Head || l.Linears[model.NameHead] == nil || l.Model.Config.TiedEmbeddings {
				t.Fatalf("%d: loaded config %+v", i, l.Config)
			}
			again, err := l.Logits(in, 4, T)
			if err != nil {
				t.Fatal(err)
			}
			if d, _ := maxAbsDiff(got, again); d != 0 {
				t.Fatalf("%d (released %v): loaded logits differ by %g", i, release, d)
			}
		}
	}
}

// TestInt8HeadOldFile: a checkpoint without the int8_head key (as written
// before it existed, and still for a float32 head) loads with a float32
// tied head.
func TestInt8HeadOldFile(t *testing.T) {
	m, data := testModel(t, 2)
	T := m.Config.SeqLen
	in, _ := windows(t, data, 2, T)
	q, err := Quantize(m, Config{Act: ActDynamic, Embeddings: true})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "old.safetensors")
	if err := q.Save(path); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(f.Metadata[metaQuant], "int8_head") {
		t.Fatalf("quant metadata %s has the key", f.Metadata[metaQuant])
	}
	l, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if l.Config.Head || l.Linears[model.NameHead] != nil || !l.Model.Config.TiedEmbeddings {
		t.Fatalf("old file loaded with an int8 head: %+v", l.Config)
	}
	want, _ := q.Logits(in, 2, T)
	got, err := l.Logits(in, 2, T)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := maxAbsDiff(want, got); d != 0 {
		t.Fatalf("logits differ by %g", d)
	}
}

// TestInt8HeadUntied: an untied head "lm_head" is quantized when Head is set
// or Layers names it, and not by default; the checkpoint round-trips.
func TestInt8HeadUntied(t *testing.T) {
	p, err := model.LookupPreset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg := p.Config
	cfg.Layers, cfg.SeqLen, cfg.TiedEmbeddings = 1, 32, false
	m, err := model.New(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	T := cfg.SeqLen
	_, data := testModel(t, 0)
	in, _ := windows(t, data, 2, T)
	q, err := Quantize(m, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if q.Linears[model.NameHead] != nil || q.Config.Head || slices.Contains(q.Config.Layers, model.NameHead) {
		t.Fatalf("default: head quantized: %+v", q.Config)
	}
	byLayers, err := Quantize(m, Config{Act: ActDynamic, Layers: m.LinearNames()})
	if err != nil {
		t.Fatal(err)
	}
	if byLayers.Linears[model.NameHead] == nil || !byLayers.Config.Head {
		t.Fatalf("Layers naming lm_head: %+v", byLayers.Config)
	}
	c := DefaultConfig()
	c.Head = true
	q, err = Quantize(m, c)
	if err != nil {
		t.Fatal(err)
	}
	if q.Linears[model.NameHead] == nil || !slices.Contains(q.Config.Layers, model.NameHead) || q.Model.Config.TiedEmbeddings {
		t.Fatalf("Head: %+v", q.Config)
	}
	want, err := q.Logits(in, 2, T)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "untied.safetensors")
	if err := q.Save(path); err != nil {
		t.Fatal(err)
	}
	l, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Config.Head || l.Linears[model.NameHead] == nil {
		t.Fatalf("loaded: %+v", l.Config)
	}
	got, err := l.Logits(in, 2, T)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := maxAbsDiff(want, got); d != 0 {
		t.Fatalf("logits differ by %g", d)
	}
}

// TestInt8HeadHostile: checkpoints whose head metadata and tensors do not
// agree fail with ErrCheckpoint.
func TestInt8HeadHostile(t *testing.T) {
	c := DefaultConfig()
	c.Head, c.Embeddings = true, true
	dir, _, f := savedQuantized(t, c)
	m, _ := testModel(t, 0)
	write := func(name string, ts []safetensors.Tensor, meta map[string]string) {
		t.Helper()
		p := filepath.Join(dir, name+".safetensors")
		if err := safetensors.WriteFile(p, ts, meta); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); !errors.Is(err, ErrCheckpoint) {
			t.Errorf("%s: err = %v, want ErrCheckpoint", name, err)
		}
	}
	C, V := m.Config.DModel, m.Config.Vocab
	extra := append(slices.Clone(f.Tensors),
		safetensors.I8Tensor(model.NameHead+".weight", []int64{int64(V), int64(C)}, make([]int8, V*C)),
		safetensors.F32Tensor(model.NameHead+".weight_scale", []int64{int64(V)}, make([]float32, V)))
	write("head-tensor", extra, f.Metadata)
	meta := map[string]string{}
	for k, v := range f.Metadata {
		meta[k] = v
	}
	meta[metaQuant] = strings.Replace(meta[metaQuant], `"layers":[`, `"layers":["lm_head",`, 1)
	write("head-layer-tied", f.Tensors, meta)
	// An untied configuration with int8_head but no lm_head layer.
	cfg := m.Config
	cfg.TiedEmbeddings = false
	um, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	uq, err := Quantize(um, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	upath := filepath.Join(dir, "untied.safetensors")
	if err := uq.Save(upath); err != nil {
		t.Fatal(err)
	}
	uf, err := safetensors.ReadFile(upath)
	if err != nil {
		t.Fatal(err)
	}
	umeta := map[string]string{}
	for k, v := range uf.Metadata {
		umeta[k] = v
	}
	umeta[metaQuant] = strings.Replace(umeta[metaQuant], `"embeddings":false`, `"embeddings":false,"int8_head":true`, 1)
	if umeta[metaQuant] == uf.Metadata[metaQuant] {
		t.Fatalf("could not edit %s", umeta[metaQuant])
	}
	write("head-untied-no-layer", uf.Tensors, umeta)
	_ = os.Remove(upath)
}
