//go:build !race

package l7

// raceDetector: this test binary runs with the race detector.
const raceDetector = false
