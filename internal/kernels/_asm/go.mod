module github.com/galleon-ml/galleon/internal/kernels/_asm

go 1.26

require github.com/mmcloughlin/avo v0.6.0 // indirect
