package kernels

// i8gemmKernelGeneric is the portable micro-kernel: acc[r·16+j] = Σ a·b over
// kg groups of the packed 4-row A and 16-column B micro-panels (the absolute
// values packed in A are not needed here).
func i8gemmKernelGeneric(kg int, a, b []int8, acc *[i8MR * i8NR]int32) {
	*acc = [i8MR * i8NR]int32{}
	a = a[:kg*i8MR*8]
	b = b[:kg*i8NR*4]
	for g := 0; g < kg; g++ {
		ag := a[g*32 : g*32+16 : g*32+16]
		bg := b[g*64 : g*64+64 : g*64+64]
		for r := 0; r < i8MR; r++ {
			a0, a1, a2, a3 := int32(ag[4*r]), int32(ag[4*r+1]), int32(ag[4*r+2]), int32(ag[4*r+3])
			row := acc[r*i8NR : r*i8NR+i8NR : r*i8NR+i8NR]
			for j := 0; j < i8NR; j++ {
				bj := bg[4*j : 4*j+4 : 4*j+4]
				row[j] += a0*int32(bj[0]) + a1*int32(bj[1]) + a2*int32(bj[2]) + a3*int32(bj[3])
			}
		}
	}
}
