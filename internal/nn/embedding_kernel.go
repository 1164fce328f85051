package nn

import (
	"fmt"

	"github.com/galleon-ml/galleon/internal/kernels"
)

// checkEmbedding validates the sizes shared by the embedding kernels and
// returns V, the vocabulary size.
func checkEmbedding(fn string, nOut, nWte, nWpe int, ids []int32, T, C, pos0 int) (int, error) {
	V, err := rowsOf(fn, "wte", nWte, C)
	if err != nil {
		return 0, err
	}
	tmax, err := rowsOf(fn, "wpe", nWpe, C)
	if err != nil {
		return 0, err
	}
	switch {
	case V == 0:
		return 0, shapeErr(fn, "empty wte")
	case T <= 0:
		return 0, shapeErr(fn, "sequence length T=%d must be positive", T)
	case len(ids)%T != 0:
		return 0, shapeErr(fn, "%d ids are not a multiple of T=%d", len(ids), T)
	case pos0 < 0 || pos0+T > tmax:
		return 0, shapeErr(fn, "positions [%d, %d) outside wpe's %d rows", pos0, pos0+T, tmax)
	}
	if err := checkLen(fn, "out", nOut, len(ids)*C); err != nil {
		return 0, err
	}
	return V, nil
}

// checkIDs reports the first id outside [0, V).
func checkIDs(fn string, ids []int32, V int) error {
	for i, id := range ids {
		if id < 0 || int(id) >= V {
			return fmt.Errorf("nn: %s: ids[%d]=%d outside [0, %d): %w", fn, i, id, V, ErrRange)
		}
	}
	return nil
}

// EmbeddingForward computes out[r] = wte[ids[r]] + wpe[pos0 + r mod T] for
// every row r of the flattened [B, T] ids: token plus learned position
// embedding. wte is [V, C], wpe [Tmax, C], out [len(ids), C]. pos0 is the
// position of each sequence's first id (0 in training, the cache length when
// generating one token at a time). It returns an error, leaving out
// untouched, if the sizes disagree or an id is outside [0, V).
func EmbeddingForward(out, wte, wpe []float32, ids []int32, T, C, pos0 int) error {
	const fn = "EmbeddingForward"
	V, err := checkEmbedding(fn, len(out), len(wte), len(wpe), ids, T, C, pos0)
	if err != nil {
		return err
	}
	if err := checkIDs(fn, ids, V); err != nil {
		return err
	}
	embeddingForward(out, wte, wpe, ids, T, C, pos0)
	return nil
}

// TokenEmbeddingForward computes out[r] = wte[ids[r]] for every id: the
// token embedding without positions (models with rotary positions). wte is
// [V, C], out [len(ids), C]. It returns an error, leaving out untouched, if
// the sizes disagree or an id is outside [0, V).
func TokenEmbeddingForward(out, wte []float32, ids []int32, C int) error {
	if err := checkTokenEmbedding("TokenEmbeddingForward", len(out), len(wte), ids, C); err != nil {
		return err
	}
	embeddingForward(out, wte, nil, ids, 1, C, 0)
	return nil
}

// embeddingForward writes wte[ids[r]] + wpe[pos0 + r mod T] into out's rows,
// or only wte[ids[r]] when wpe is nil.
func embeddingForward(out, wte, wpe []float32, ids []int32, T, C, pos0 int) {
	embeddingForwardLoops.Run(0, embeddingForwardBody{out, wte, wpe, ids, T, C, pos0}, len(ids), rowGrain(C))
}

// embeddingForwardBody is the loop body of embeddingForward, over rows.
type embeddingForwardBody struct {
	out, wte, wpe []float32
	ids           []int32
	T, C, pos0    int
}

var embeddingForwardLoops kernels.Chunks[embeddingForwardBody, *embeddingForwardBody]

func (b *embeddingForwardBody) Chunk(lo, hi int) {
	out, wte, wpe, ids := b.out, b.wte, b.wpe, b.ids
	T, C, pos0 := b.T, b.C, b.pos0
	for r := lo; r < hi; r++ {
		id, t := int(ids[r]), pos0+r%T
		o := out[r*C : r*C+C]
		e := wte[id*C : id*C+C]
		if wpe == nil {
			copy(o, e)
			continue
		}
		p := wpe[t*C : t*C+C]
		for k := range o {
			o[k] = e[k] + p[k]
		}
	}
}

// EmbeddingBackward scatters dout back to the tables: dwte[ids[r]] += dout[r]
// and dwpe[pos0 + r mod T] += dout[r]. Either gradient may be nil to skip it.
// Rows are added in order, so repeated ids give a deterministic sum.
func EmbeddingBackward(dwte, dwpe, dout []float32, ids []int32, T, C, pos0 int) error {
	const fn = "EmbeddingBackward"
	if dwte == nil && dwpe == nil {
		return nil
	}
	// Sizes of the tables come from the gradients, which are the tables' shape.
	nWte, nWpe := len(dwte), len(dwpe)
	if dwte == nil {
		nWte = C
	}
	if dwpe == nil {
		nWpe = (pos0 + T) * C
	}
	V, err := checkEmbedding(fn, len(dout), nWte, nWpe, ids, T, C, pos0)
	if err != nil {
		return err
	}
	if dwte != nil {
		if err := checkIDs(fn, ids, V); err != nil {
			return err
		}
		embeddingBackwardWte(dwte, dout, ids, C)
	}
	if dwpe != nil {
		embeddingBackwardWpe(dwpe, dout, len(ids), T, C, pos0)
	}
	return nil
}

// embeddingBackwardWte adds dout's rows into dwte's rows ids. Repeated ids
// make the rows collide, so the work is split by columns, each chunk adding
// every row in order.
func embeddingBackwardWte(dwte, dout []float32, ids []int32, C int) {
	body := embeddingBackwardBody{dst: dwte, dout: dout, ids: ids, C: C, T: -1, rows: len(ids)}
	embeddingBackwardLoops.Run(0, body, C, colGrain(C, len(ids)))
}

// embeddingBackwardWpe adds dout's rows into dwpe's rows pos0 + r mod T.
func embeddingBackwardWpe(dwpe, dout []float32, rows, T, C, pos0 int) {
	body := embeddingBackwardBody{dst: dwpe, dout: dout, C: C, T: T, pos0: pos0, rows: rows}
	embeddingBackwardLoops.Run(0, body, C, colGrain(C, rows))
}

// embeddingBackwardBody is the loop body of the embedding gradients, over
// columns: it scatters columns [lo, hi) of dout's rows to dst's rows ids,
// or, when T ≥ 1, to positions pos0 + r mod T.
type embeddingBackwardBody struct {
	dst, dout        []float32
	ids              []int32
	C, T, pos0, rows int
}

var embeddingBackwardLoops kernels.Chunks[embeddingBackwardBody, *embeddingBackwardBody]

func (b *embeddingBackwardBody) Chunk(lo, hi int) {
	dst, dout, ids := b.dst, b.dout, b.ids
	C, T, pos0, rows := b.C, b.T, b.pos0, b.rows
	for r := 0; r < rows; r++ {
		var d int
		if T < 0 {
			d = int(ids[r])
		} else {
			d = pos0 + r%T
		}
		kernels.Axpy(1, dout[r*C+lo:r*C+hi], dst[d*C+lo:d*C+hi])
	}
}

// TokenEmbeddingForwardBF16 is TokenEmbeddingForward over a table held in
// bfloat16 (a frozen embedding, as Hugging Face BF16 checkpoints store
// it): each row is widened exactly to float32 as it is gathered.
func TokenEmbeddingForwardBF16(out []float32, wte []uint16, ids []int32, C int) error {
	if err := checkTokenEmbedding("TokenEmbeddingForwardBF16", len(out), len(wte), ids, C); err != nil {
		return err
	}
	for r, id := range ids {
		kernels.FromBF16(out[r*C:(r+1)*C], wte[int(id)*C:(int(id)+1)*C])
	}
	return nil
}

// checkTokenEmbedding checks a token gather's sizes, whatever the table's
// element type: a non-empty [V, C] table, an output of one row per id, and
// every id in [0, V).
func checkTokenEmbedding(fn string, outLen, wteLen int, ids []int32, C int) error {
	V, err := rowsOf(fn, "wte", wteLen, C)
	if err != nil {
		return err
	}
	if V == 0 {
		return shapeErr(fn, "empty wte")
	}
	if err := checkLen(fn, "out", outLen, len(ids)*C); err != nil {
		return err
	}
	return checkIDs(fn, ids, V)
}
