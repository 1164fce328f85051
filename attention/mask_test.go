package attention

import "testing"

// TestTileRangesSkipMaskedKeys checks the ranges that decide which tiles the
// kernels visit against brute force over every row: the forward pass of a
// query block walks exactly the keys some row of the block can see (so whole
// tiles above the causal diagonal or outside a window are never computed),
// and the backward pass of a key block walks exactly the query rows that see
// one of its keys.
func TestTileRangesSkipMaskedKeys(t *testing.T) {
	cases := []struct {
		name    string
		Tq, Tk  int
		opts    Options
		decode  bool
		length  int
		lengths []int
	}{
		{name: "causal", Tq: 333, Tk: 333, opts: Options{Causal: true, BlockQ: 48, BlockK: 64}},
		{name: "causal default tiles", Tq: 1000, Tk: 1000, opts: Options{Causal: true}},
		{name: "causal suffix", Tq: 70, Tk: 200, opts: Options{Causal: true, BlockQ: 16, BlockK: 32}},
		{name: "causal prefix", Tq: 200, Tk: 70, opts: Options{Causal: true, BlockQ: 16, BlockK: 32}},
		{name: "window", Tq: 300, Tk: 300, opts: Options{Causal: true, Window: 50, BlockQ: 32, BlockK: 16}},
		{name: "bidirectional window", Tq: 150, Tk: 150, opts: Options{Window: 20, BlockQ: 7, BlockK: 5}},
		{name: "lengths", Tq: 130, Tk: 130, opts: Options{Causal: true, BlockQ: 32, BlockK: 32}, lengths: []int{130, 33, 0}},
		{name: "decode", Tq: 3, Tk: 500, opts: Options{Causal: true, BlockK: 64}, decode: true, length: 421},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			B := 1
			if c.lengths != nil {
				B = len(c.lengths)
				c.opts.Lengths = c.lengths
			}
			p := &problem{B: B, H: 1, KVH: 1, G: 1, Tq: c.Tq, Tk: c.Tk, D: 16}
			if err := p.resolve(&c.opts, c.decode, c.length); err != nil {
				t.Fatal(err)
			}
			visited, total := 0, 0
			for b := 0; b < B; b++ {
				for i0 := 0; i0 < p.Tq; i0 += p.bq {
					i1 := min(i0+p.bq, p.Tq)
					wantLo, wantHi := p.Tk, 0
					for i := i0; i < i1; i++ {
						if lo, hi := p.keyRange(b, i); lo < hi {
							wantLo, wantHi = min(wantLo, lo), max(wantHi, hi)
						}
					}
					lo, hi := p.blockKeyRange(b, i0, i1)
					if wantLo >= wantHi {
						if lo < hi {
							t.Fatalf("seq %d rows [%d,%d) see no key but the block visits [%d,%d)", b, i0, i1, lo, hi)
						}
						continue
					}
					if lo != wantLo || hi != wantHi {
						t.Fatalf("seq %d rows [%d,%d): visits keys [%d,%d), rows see [%d,%d)", b, i0, i1, lo, hi, wantLo, wantHi)
					}
					visited += hi - lo
					total += p.Tk
				}
				for j0 := 0; j0 < p.Tk; j0 += p.bk {
					j1 := min(j0+p.bk, p.Tk)
					wantI0, wantI1 := -1, -1
					for i := 0; i < p.Tq; i++ {
						if lo, hi := p.keyRange(b, i); max(lo, j0) < min(hi, j1) {
							if wantI0 < 0 {
								wantI0 = i
							} else if wantI1 != i {
								t.Fatalf("seq %d keys [%d,%d): rows that see them are not one interval", b, j0, j1)
							}
							wantI1 = i + 1
						}
					}
					i0, i1 := p.queryRangeForKeys(b, j0, j1)
					if wantI0 < 0 {
						if i0 < i1 {
							t.Fatalf("seq %d keys [%d,%d) are seen by no row, but rows [%d,%d) are visited", b, j0, j1, i0, i1)
						}
						continue
					}
					if i0 != wantI0 || i1 != wantI1 {
						t.Fatalf("seq %d keys [%d,%d): visits rows [%d,%d), want [%d,%d)", b, j0, j1, i0, i1, wantI0, wantI1)
					}
				}
			}
			if c.name == "causal default tiles" {
				// Square causal attention touches about half the key-block
				// area: the diagonal blocks' triangles are the excess.
				if frac := float64(visited) / float64(total); frac > 0.5+float64(p.bq)/float64(p.Tk) {
					t.Fatalf("causal forward visits %.2f of the keys", frac)
				}
			}
		})
	}
}
