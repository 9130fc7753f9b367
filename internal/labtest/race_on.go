//go:build race

package labtest

// RaceDetector: this binary runs with the race detector, which
// multiplies the CPU time of every Go instruction and enlarges the
// memory goroutines and allocations take.
const RaceDetector = true
