//go:build !amd64 || purego

package kernels

// cpuLevel is generic where no assembly is built.
const cpuLevel = LevelGeneric
