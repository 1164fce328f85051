package nn

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
)

// withGrain runs f with chunks of grain elements, so that small inputs are
// split across the helpers.
func withGrain(grain int, f func()) {
	old := parGrain
	parGrain = grain
	defer func() { parGrain = old }()
	f()
}

// TestParallelMatchesSerial runs every kernel with one chunk and with many:
// the results must be bit-identical, since chunks never share a sum.
func TestParallelMatchesSerial(t *testing.T) {
	const n, C, V, T = 37, 45, 29, 37
	r := newRand(11)
	x, g, b, dy := randn32(r, n*C, 2), randn32(r, C, 1), randn32(r, C, 1), randn32(r, n*C, 1)
	logits := randn32(r, n*V, 2)
	ids, targets := randIDs(r, n, V), randIDs(r, n, V)
	targets[3] = IgnoreIndex
	wte, wpe := randn32(r, V*C, 1), randn32(r, T*C, 1)

	type result map[string][]float32
	compute := func() result {
		res := result{}
		out := make([]float32, n*C)
		must(t, EmbeddingForward(out, wte, wpe, ids, T, C, 0))
		res["emb"] = out
		dwte, dwpe := filled(V*C, 1), filled(T*C, 1)
		must(t, EmbeddingBackward(dwte, dwpe, dy, ids, T, C, 0))
		res["dwte"], res["dwpe"] = dwte, dwpe

		y, mean, rstd := make([]float32, n*C), make([]float32, n), make([]float32, n)
		must(t, LayerNormForward(y, mean, rstd, x, g, b, C, 1e-5))
		res["ln"], res["mean"], res["rstd"] = y, mean, rstd
		dx, dg, db := filled(n*C, 1), filled(C, 1), filled(C, 1)
		must(t, LayerNormBackward(dx, dg, db, dy, x, g, mean, rstd, C))
		res["ln dx"], res["ln dg"], res["ln db"] = dx, dg, db
		dx2 := make([]float32, n*C)
		layerNormBackwardX(dx2, dy, x, g, mean, rstd, C, false)
		res["ln dx overwrite"] = dx2

		gy, s := make([]float32, n*C), make([]float32, n*C)
		must(t, GELUForward(gy, x))
		res["gelu"] = gy
		geluForward(make([]float32, n*C), s, x)
		res["gelu s"] = s
		gdx := filled(n*C, 1)
		must(t, GELUBackward(gdx, dy, x))
		res["gelu dx"] = gdx
		gdx2 := make([]float32, n*C)
		geluBackward(gdx2, dy, x, s, false)
		res["gelu dx saved"] = gdx2

		probs, rowLoss := make([]float32, n*V), make([]float64, n)
		loss := crossEntropyForward(probs, logits, targets, V, n-1, rowLoss)
		res["ce probs"], res["ce loss"] = probs, []float32{loss}
		dl := make([]float32, n*V)
		crossEntropyBackward(dl, probs, targets, V, n-1, 1.3, false)
		res["ce dlogits"] = dl
		return res
	}
	serial := compute()
	for _, grain := range []int{1, 8, 50, 333} {
		var par result
		withGrain(grain, func() { par = compute() })
		for k, want := range serial {
			if !slices.Equal(par[k], want) {
				t.Errorf("grain %d: %s differs from the serial result", grain, k)
			}
		}
	}
	// The serial and the parallel loss paths sum the same row values in the
	// same order.
	probs := make([]float32, n*V)
	l, _, err := CrossEntropyForward(probs, logits, targets, V)
	must(t, err)
	if math.Float32bits(l) != math.Float32bits(serial["ce loss"][0]) {
		t.Errorf("CrossEntropyForward %v, op path %v", l, serial["ce loss"][0])
	}
}

// TestParallelConcurrentCallers runs many split kernels at once from several
// goroutines (data-parallel replicas do): each must get its own result.
func TestParallelConcurrentCallers(t *testing.T) {
	const n = 5000
	withGrain(64, func() {
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for w := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := newRand(uint64(w))
				x := randn32(r, n, 2)
				want := make([]float32, n)
				for i, v := range x {
					want[i] = float32(0.5 * float64(v) * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(float64(v)+0.044715*float64(v)*float64(v)*float64(v)))))
				}
				y := make([]float32, n)
				for range 20 {
					if err := GELUForward(y, x); err != nil {
						errs[w] = err
						return
					}
					for i := range y {
						if math.Abs(float64(y[i]-want[i])) > 1e-5+1e-5*math.Abs(float64(want[i])) {
							errs[w] = fmt.Errorf("worker %d: y[%d] = %v, want %v", w, i, y[i], want[i])
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
