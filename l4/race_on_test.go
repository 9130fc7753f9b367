//go:build race

package l4

// raceDetector: this test binary runs with the race detector, which
// multiplies the CPU time of every Go instruction.
const raceDetector = true
