package attention

// Masked blocks inside a tile. A tile of query rows × keys on the causal
// diagonal (or a window's edge) is partly masked; the products skip every
// 6-row register block's columns that none of its rows can see, so a
// causal pass computes about T·16 masked scores per head instead of half a
// tile per row (T·BlockK/2 in the backward pass). Skipped terms are exact
// zeros (masked probabilities and score gradients), so the sums they drop
// are the same sums.

// span is the range [lo, hi) of keys (columns of a tile) one query row
// sees, or of query rows that see one block of keys; lo >= hi is empty.
type span struct{ lo, hi int }

// rowSpans sets sp[r], for the query rows i0+r with r < len(sp), to the keys
// of [j0, j0+bc) that the row sees, relative to j0; {0, 0} when it sees
// none. The non-empty spans have non-decreasing ends (keyRange's), and the
// empty ones come first or last.
func (p *problem) rowSpans(sp []span, b, i0, j0, bc int) {
	for r := range sp {
		lo, hi := p.keyRange(b, i0+r)
		lo, hi = max(lo-j0, 0), min(hi-j0, bc)
		if lo >= hi {
			lo, hi = 0, 0
		}
		sp[r] = span{lo, hi}
	}
}

// blockSpans sets, for each 6-row block rb of a tile whose first len(sp)
// rows have the spans sp, raw[rb] to the union of its rows' spans and
// cov[rb] to the columns the products over the head dimension (the scores
// and dP) compute: the union rounded out to whole 16-column blocks, at most
// nb. Empty blocks get {0, 0}. (Rounding further, to whole 32-column blocks
// for the AVX-512 kernel, measured no faster in BenchmarkPresets: the 6×16
// kernel's remainder costs about what the extra masked columns do.)
func blockSpans(cov, raw, sp []span, nb int) {
	for rb := range raw {
		u := span{}
		for _, s := range sp[rb*microM : min(rb*microM+microM, len(sp))] {
			switch {
			case s.lo >= s.hi:
			case u.lo >= u.hi:
				u = s
			default:
				u = span{min(u.lo, s.lo), max(u.hi, s.hi)}
			}
		}
		raw[rb] = u
		if u.lo >= u.hi {
			cov[rb] = span{}
			continue
		}
		c := span{u.lo &^ (microN - 1), min(roundUp(u.hi, microN), nb)}
		cov[rb] = c
	}
}

// gemmCover computes C = op(A·B) (A row-major with leading dimension lda,
// k in chunks of kc) on the columns cov[rb] of each 6-row block rb of C,
// one call for each run of blocks with the same columns. The other
// columns are left as they were.
func gemmCover(cov []span, kc, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, mode int, p, dv []float32) {
	for rb := 0; rb < len(cov); {
		s := cov[rb]
		re := rb + 1
		for re < len(cov) && cov[re] == s {
			re++
		}
		if s.lo < s.hi {
			r0 := rb * microM
			var pr, dr []float32
			if mode >= tileDS {
				pr, dr = p[r0*ldc+s.lo:], dv[r0:]
			}
			gemmChunked(kc, (re-rb)*microM, s.hi-s.lo, k, a[r0*lda:], lda, 1, b[s.lo:], ldb, c[r0*ldc+s.lo:], ldc, mode, pr, dr)
		}
		rb = re
	}
}
