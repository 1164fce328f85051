//go:build !amd64 || purego

package attention

// hasAsm is false where the assembly tile kernel is not built.
const hasAsm = false

func kern6x16(n, k int, a *float32, sai, sak int, b *float32, ldb int, c *float32, ldc int, mode int, p, dv *float32) {
	panic("attention: assembly tile kernel called in a build without assembly")
}

func dotChain(x, y *float32, n, kc int) float32 {
	panic("attention: assembly tile kernel called in a build without assembly")
}
