//go:build !unix

package safetensors

import "os"

// openNonblock opens path read-only; systems outside unix have no FIFOs
// that block an open.
func openNonblock(path string) (*os.File, error) {
	return os.Open(path)
}
