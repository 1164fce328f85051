// Package gorgoniablas plugs galleon's kernels into gorgonia and gorgonia
// tensor: every float32 matrix product either of them computes (Mul,
// BatchedMatMul, their backward passes, matrix-vector products) runs on
// kernels.Sgemm instead of gonum's ~10× slower SGEMM.
package gorgoniablas

import (
	"sync"

	"github.com/galleon-ml/galleon/internal/kernels"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// BLAS is gonum's implementation with the float32 matrix routines replaced
// by galleon's kernels. It follows gonum's row-major conventions, which is
// what gorgonia tensor passes (tensor performs the column-major swap itself
// before calling).
type BLAS struct {
	gonum.Implementation
}

// Sgemm computes C = alpha·op(A)·op(B) + beta·C (row-major, as gonum).
func (BLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	kernels.Sgemm(isTrans(tA), isTrans(tB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Sgemv computes y = alpha·op(A)·x + beta·y (row-major, as gonum). Unit
// strides run as a one-column GEMM on the kernels; other strides, which
// gorgonia never passes, fall back to gonum.
func (impl BLAS) Sgemv(tA blas.Transpose, m, n int, alpha float32, a []float32, lda int, x []float32, incX int, beta float32, y []float32, incY int) {
	if incX != 1 || incY != 1 || m == 0 || n == 0 {
		impl.Implementation.Sgemv(tA, m, n, alpha, a, lda, x, incX, beta, y, incY)
		return
	}
	if isTrans(tA) {
		// y (n) = Aᵀ (n×m) · x (m)
		checkVec("x", len(x), m)
		checkVec("y", len(y), n)
		kernels.Sgemm(true, false, n, 1, m, alpha, a, lda, x, 1, beta, y, 1)
		return
	}
	checkVec("x", len(x), n)
	checkVec("y", len(y), m)
	kernels.Sgemm(false, false, m, 1, n, alpha, a, lda, x, 1, beta, y, 1)
}

// Sger computes A += alpha·x·yᵀ (row-major, as gonum), the gradient of a
// matrix-vector product; unit strides run as a k=1 GEMM on the kernels.
func (impl BLAS) Sger(m, n int, alpha float32, x []float32, incX int, y []float32, incY int, a []float32, lda int) {
	if incX != 1 || incY != 1 || m == 0 || n == 0 {
		impl.Implementation.Sger(m, n, alpha, x, incX, y, incY, a, lda)
		return
	}
	checkVec("x", len(x), m)
	checkVec("y", len(y), n)
	kernels.Sgemm(false, false, m, n, 1, alpha, x, 1, y, n, 1, a, lda)
}

func isTrans(t blas.Transpose) bool {
	switch t {
	case blas.NoTrans:
		return false
	case blas.Trans, blas.ConjTrans:
		return true
	}
	panic("gorgoniablas: bad transpose flag")
}

func checkVec(name string, have, want int) {
	if have < want {
		panic("gorgoniablas: " + name + " too short")
	}
}

var installMu sync.Mutex

// Install makes gorgonia and gorgonia tensor use BLAS for every matrix
// product. It is idempotent and safe from many goroutines; it writes
// gorgonia's global only when another BLAS is installed, so graphs already
// running are not disturbed by later calls.
func Install() {
	installMu.Lock()
	defer installMu.Unlock()
	_, ours := G.WhichBLAS().(BLAS)
	_, oursT := tensor.WhichBLAS().(BLAS)
	if !ours || !oursT {
		G.Use(BLAS{})
	}
}
