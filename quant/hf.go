package quant

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/galleon-ml/galleon/internal/safetensors"
	"github.com/galleon-ml/galleon/model"
)

// Int8 model directories (written by SavePretrained, read by
// LoadPretrained and by `galleon quantize`'s users through -int8):
//
//   - config.json, and the tokenizer and generation files
//     (SideFiles), copied unchanged from the Hugging Face directory the
//     model came from, so that a tokenizer and a chat template load from
//     it as from the original;
//   - Int8WeightsFile, one safetensors file with metadata
//     format=galleon-int8-hf and quant (the Config as JSON), holding the
//     tensors under their Hugging Face names: each int8 linear module M as
//     M.weight I8 [out, in] (one row per output channel, for every family,
//     GPT-2's Conv1D included) with M.weight_scale F32 [out], its bias if
//     the architecture has one F32 [out]; every other tensor (embeddings,
//     norms, GPT-2's positions, a float head) F32 in the layout of a
//     Hugging Face file.
//
// There is no model.safetensors, so float loaders (and transformers) refuse
// the directory instead of misreading it. The weights take one byte per
// linear weight plus four per output channel; the embeddings and norms
// stay float32 (four bytes per value).
const (
	// Int8WeightsFile is the weights file of an int8 model directory.
	Int8WeightsFile = "model.int8.safetensors"
	formatInt8HF    = "galleon-int8-hf"
)

// SideFiles are the files SavePretrained copies from the source directory
// when present: the configuration (required), generation settings and the
// tokenizer in its Hugging Face forms.
var SideFiles = append([]string{"config.json"}, model.HFSideFiles...)

// rowsPerRead is how many output channels LoadPretrained widens to float32
// at a time while quantizing a float weight.
const rowsPerRead = 64

// IsInt8Dir reports whether dir holds an int8 model directory (its
// Int8WeightsFile exists).
func IsInt8Dir(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, Int8WeightsFile))
	return err == nil && fi.Mode().IsRegular()
}

// LoadPretrained loads the Hugging Face model directory dir as an int8
// model, memory-bounded: the files are streamed one tensor at a time, and
// each linear weight is quantized per output channel as it is read (or, from
// an int8 directory that SavePretrained wrote, taken as stored), so no
// float32 copy of the linear weights is ever held. Memory follows the int8
// weights (a byte per weight and four bytes per output channel), the
// float32 embeddings and norms, and the file bytes of the largest tensor.
//
// cfg chooses the activation mode (ActFloat or ActDynamic; ActStatic needs
// calibration, which Quantize does) and the outlier threshold. The layers
// quantized are all linear modules, or cfg.Layers if set, plus an untied
// output head "lm_head" when cfg.Head is set (for a float directory; an
// int8 directory's head is int8 exactly when it was saved so). A tied head
// is the token embedding and stays float32; cfg.Embeddings is not
// supported here (the embeddings stay float32). Every value is checked:
// non-finite floats, and int8 scales that are not positive or whose
// dequantized values overflow float32, are refused with an error naming the
// tensor.
func LoadPretrained(dir string, cfg Config) (*Model, error) {
	switch {
	case cfg.Act == ActStatic:
		return nil, fmt.Errorf("quant: LoadPretrained: static activations need calibration (Calibrate, Quantize): %w", ErrInput)
	case cfg.Act != ActFloat && cfg.Act != ActDynamic:
		return nil, fmt.Errorf("quant: LoadPretrained: activation mode %d: %w", cfg.Act, ErrInput)
	case cfg.Embeddings:
		return nil, fmt.Errorf("quant: LoadPretrained: int8 embeddings are not supported when loading a directory: %w", ErrInput)
	case !(cfg.Threshold >= 0) || math.IsInf(float64(cfg.Threshold), 0):
		return nil, fmt.Errorf("quant: LoadPretrained: threshold %v: %w", cfg.Threshold, ErrInput)
	}
	var opts []model.LoadOption
	takes := func(module string) bool {
		if len(cfg.Layers) > 0 {
			return slices.Contains(cfg.Layers, module)
		}
		return module != model.NameHead || cfg.Head
	}
	if IsInt8Dir(dir) {
		r, err := safetensors.Open(filepath.Join(dir, Int8WeightsFile))
		if err != nil {
			return nil, fmt.Errorf("quant: %s: %w: %w", dir, ErrCheckpoint, err)
		}
		format := r.Metadata[metaFormat]
		i8 := map[string]bool{}
		for _, t := range r.Tensors() {
			if t.DType == safetensors.I8 {
				i8[t.Name] = true
			}
		}
		r.Close()
		if format != formatInt8HF {
			return nil, fmt.Errorf("quant: %s: %w: format %q, want %q", filepath.Join(dir, Int8WeightsFile), ErrCheckpoint, format, formatInt8HF)
		}
		// The stored int8 layers are int8, whatever cfg.Layers says; the
		// loader refuses any other tensor that is not the model's.
		takes = func(module string) bool { return i8[module+".weight"] }
		opts = append(opts, model.WithWeightsFile(Int8WeightsFile))
	}
	linears := map[string]*Linear{}
	load := func(w *model.HFLinear) (model.Linear, error) {
		l, err := linearFromHF(w, LinearOptions{Act: cfg.Act, Threshold: cfg.Threshold})
		if err != nil {
			return nil, err
		}
		linears[w.Module] = l
		return l, nil
	}
	opts = append(opts, model.WithLinearLoader(takes, load))
	m, err := model.LoadPretrained(dir, opts...)
	if err != nil {
		return nil, fmt.Errorf("quant: %w", err)
	}
	for _, p := range m.Weights.Params {
		if err := checkFinite("tensor "+p.Name, p.Data); err != nil {
			return nil, fmt.Errorf("quant: %s: %w: %w", dir, ErrCheckpoint, err)
		}
	}
	q := &Model{Model: m, Config: cfg, Linears: linears, Embeddings: map[string]*Rows{}}
	q.Config.Layers = nil
	for _, name := range m.LinearNames() {
		if linears[name] != nil {
			q.Config.Layers = append(q.Config.Layers, name)
		}
	}
	q.Config.Head = linears[model.NameHead] != nil
	return q, nil
}

// linearFromHF builds the int8 layer of one module: an I8 weight is taken
// as stored (its scales checked), a float one quantized per output channel
// rowsPerRead channels at a time.
func linearFromHF(w *model.HFLinear, opts LinearOptions) (*Linear, error) {
	name := w.Module + ".weight"
	r := &Rows{Rows: w.Out, Cols: w.In}
	if w.DType == "int8" {
		var err error
		if r.Data, r.Scale, err = w.Int8(); err != nil {
			return nil, err
		}
		if err := checkScales(r.Scale); err != nil {
			return nil, fmt.Errorf("tensor %q: %w: %w", name+model.HFScaleSuffix, ErrCheckpoint, err)
		}
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("tensor %q: %w: %w", name, ErrCheckpoint, err)
		}
	} else {
		r.Data, r.Scale = make([]int8, w.Out*w.In), make([]float32, w.Out)
		err := w.Rows(rowsPerRead, func(first int, rows []float32) error {
			if err := checkFinite("tensor "+name, rows); err != nil {
				return fmt.Errorf("%w (output channel %d on)", err, first)
			}
			for k := range len(rows) / w.In {
				row := rows[k*w.In : (k+1)*w.In]
				s := ScaleFor(absMax(row))
				r.Scale[first+k] = s
				q := r.Data[(first+k)*w.In : (first+k+1)*w.In]
				for j, v := range row {
					q[j] = Round(v, s)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := checkFinite("tensor "+w.Module+".bias", w.Bias); err != nil {
		return nil, err
	}
	return NewLinearFromRows(r, w.Bias, opts)
}

// SavePretrained writes q as an int8 model directory (see Int8WeightsFile)
// at dir, atomically: the int8 weights, and the SideFiles present in from,
// the Hugging Face directory q was loaded from (config.json is required:
// it describes the model to every loader). It writes one tensor at a time
// from q's own storage, so saving adds no copy of the model. Every linear
// layer of q must be int8 or dense; a tied int8 head (Quantize with Head on
// a tied model) is refused, since the directory keeps config.json's tied
// head.
func (q *Model) SavePretrained(dir, from string) error {
	arch := q.Model.Config
	if q.Config.tiedHead() {
		return fmt.Errorf("quant: SavePretrained: an int8 head over a tied embedding cannot be saved in a directory whose config.json ties them: %w", ErrInput)
	}
	if len(q.Embeddings) > 0 {
		return fmt.Errorf("quant: SavePretrained: int8 embeddings are not part of the directory format: %w", ErrInput)
	}
	var sources []safetensors.Source
	for _, p := range q.Model.Weights.Params {
		module, isWeight := trimSuffix(p.Name, ".weight"), true
		if module == "" {
			module, isWeight = trimSuffix(p.Name, ".bias"), false
		}
		l := q.Linears[module]
		if l != nil && isWeight {
			continue // written from the int8 layer below
		}
		data := p.Data
		if l != nil && l.Bias != nil {
			data = l.Bias // the bias the layer uses
		}
		shape, transposed := arch.HFLayout(p.Name, p.Shape)
		cols := 0
		if transposed {
			cols = int(shape[1])
		}
		sources = append(sources, f32Source(p.Name, shape, data, cols))
	}
	names := make([]string, 0, len(q.Linears))
	for name := range q.Linears {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		l := q.Linears[name]
		w := name + ".weight"
		sources = append(sources,
			safetensors.Source{Name: w, DType: safetensors.I8, Shape: []int64{int64(l.Out), int64(l.In)}, Data: func() ([]byte, error) {
				b := make([]byte, len(l.Weight.Data))
				for i, v := range l.Weight.Data {
					b[i] = byte(v)
				}
				return b, nil
			}},
			f32Source(w+model.HFScaleSuffix, []int64{int64(l.Out)}, l.Weight.Scale, 0))
		if b := name + ".bias"; arch.LinearHasBias(name) && q.Model.Weights.Get(b) == nil {
			bias := l.Bias
			if bias == nil {
				bias = make([]float32, l.Out)
			}
			sources = append(sources, f32Source(b, []int64{int64(l.Out)}, bias, 0))
		}
	}
	qc, err := json.Marshal(q.Config)
	if err != nil {
		return fmt.Errorf("quant: SavePretrained: %w", err)
	}
	meta := map[string]string{metaFormat: formatInt8HF, metaQuant: string(qc)}
	files := map[string]func(io.Writer) error{
		Int8WeightsFile: func(w io.Writer) error { return safetensors.WriteStream(w, sources, meta) },
	}
	model.CopyFilesFrom(files, from, SideFiles)
	if files["config.json"] == nil {
		return fmt.Errorf("quant: SavePretrained: %s has no config.json: %w", from, ErrInput)
	}
	if err := model.WriteDirAtomic(dir, files); err != nil {
		return fmt.Errorf("quant: SavePretrained: %w", err)
	}
	return nil
}

// f32Source is an F32 tensor for safetensors.WriteStream, encoded when the
// writer reaches it; with cols > 0, src holds the transpose (cols×rows) of
// the rows×cols tensor written.
func f32Source(name string, shape []int64, src []float32, cols int) safetensors.Source {
	return safetensors.Source{Name: name, DType: safetensors.F32, Shape: shape, Data: func() ([]byte, error) {
		b := make([]byte, 4*len(src))
		rows := 0
		if cols > 0 {
			rows = len(src) / cols
		}
		for k := range src {
			v := src[k]
			if cols > 0 {
				v = src[(k%cols)*rows+k/cols]
			}
			binary.LittleEndian.PutUint32(b[4*k:], math.Float32bits(v))
		}
		return b, nil
	}}
}
