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

// TestBlockSpans checks the spans of the 6-row blocks inside causal and
// windowed tiles against their rows: raw is the union of the rows' keys,
// cov covers it in whole 16-column blocks within the tile, and a causal
// pass covers at most 16 masked columns per row beyond the visible ones
// (plus one row block's diagonal).
func TestBlockSpans(t *testing.T) {
	for _, o := range []Options{{Causal: true}, {Causal: true, Window: 40, BlockQ: 30, BlockK: 50}, {Window: 9, BlockQ: 12, BlockK: 7}} {
		p := &problem{B: 1, H: 1, KVH: 1, G: 1, Tq: 256, Tk: 256, D: 32}
		if err := p.resolve(&o, false, 0); err != nil {
			t.Fatal(err)
		}
		mr := roundUp(p.bq, microM)
		sp, raw, cov := make([]span, p.bq), make([]span, mr/microM), make([]span, mr/microM)
		visible, covered := 0, 0
		for i0 := 0; i0 < p.Tq; i0 += p.bq {
			br := min(p.bq, p.Tq-i0)
			for j0 := 0; j0 < p.Tk; j0 += p.bk {
				bc := min(p.bk, p.Tk-j0)
				nb := roundUp(bc, microN)
				nrb := roundUp(br, microM) / microM
				p.rowSpans(sp[:br], 0, i0, j0, bc)
				blockSpans(cov[:nrb], raw[:nrb], sp[:br], nb)
				for rb := 0; rb < nrb; rb++ {
					lo, hi := bc, 0
					for r := rb * microM; r < min(rb*microM+microM, br); r++ {
						l, h := p.keyRange(0, i0+r)
						l, h = max(l-j0, 0), min(h-j0, bc)
						if l < h {
							lo, hi = min(lo, l), max(hi, h)
							visible += h - l
						}
					}
					u, c := raw[rb], cov[rb]
					if lo >= hi {
						if u.lo < u.hi || c.lo < c.hi {
							t.Fatalf("%+v rows %d+%d keys %d: empty block has spans %v %v", o, i0, rb*microM, j0, u, c)
						}
						continue
					}
					if u != (span{lo, hi}) {
						t.Fatalf("%+v rows %d+%d keys %d: raw %v, want [%d,%d)", o, i0, rb*microM, j0, u, lo, hi)
					}
					if c.lo > u.lo || c.hi < u.hi || c.lo%microN != 0 || (c.hi%microN != 0 && c.hi != nb) || c.hi > nb {
						t.Fatalf("%+v rows %d+%d keys %d: cover %v of %v (nb %d)", o, i0, rb*microM, j0, c, u, nb)
					}
					covered += microM * (c.hi - c.lo)
				}
			}
		}
		if o.Window == 0 && covered > visible+p.Tq*(microN+microM) {
			t.Fatalf("causal: %d products cover %d visible scores", covered, visible)
		}
	}
}
