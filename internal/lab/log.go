package lab

import (
	"bytes"
	"sync"
)

// Log collects a process's output, read while it is written. It keeps the
// first MiB and drops the rest.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// maxLog is how much of a process's output a Log keeps.
const maxLog = 1 << 20

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > maxLog {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
