//go:build !amd64 || purego

package kernels

// Without assembly the int8 kernels are the portable ones: operands are
// always packed in the int8 layout.

// The int8 implementations' toggles (i8gemm_amd64.go) are constant false.
const i8SignTrickAsm, i8W16, i8VNNI = false, false, false

func absMaxRow(row []float32) float32 { return absMax(row) }

// taskAsm reports false: there is no assembly kernel to run.
func (j *i8Job) taskAsm(i0, i1, j0, j1 int) bool { return false }

// quantizePanel quantizes the four rows i0…i0+3 (at x, stride ldx) one row
// at a time.
func quantizePanel(x []float32, ldx, k int, scale float32, dst *I8PackedA, i0 int) (finite bool) {
	finite = true
	for r := 0; r < i8MR; r++ {
		finite = quantizeRow(x[r*ldx:r*ldx+k], scale, nil, dst, i0+r) && finite
	}
	return finite
}
