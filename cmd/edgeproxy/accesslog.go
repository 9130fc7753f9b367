package main

import (
	"io"
	"sync"
	"time"
)

const (
	accessLogBuffer = 64 << 10               // bytes of whole lines held before a write
	accessLogFlush  = 200 * time.Millisecond // longest a line waits for its write
)

// lineBuffer batches the access log's lines into one write per buffer or
// per flush period, whichever fills first, instead of one write per
// request. Each Write is one whole line (slog's handlers write a record at
// once), and a write never splits one.
type lineBuffer struct {
	mu   sync.Mutex
	w    io.Writer
	buf  []byte
	err  error // a failed periodic write, returned to the next Write
	shut bool  // closed: lines go straight to w
	stop chan struct{}
	done chan struct{}
}

func newLineBuffer(w io.Writer, size int, every time.Duration) *lineBuffer {
	b := &lineBuffer{w: w, buf: make([]byte, 0, size), stop: make(chan struct{}), done: make(chan struct{})}
	go b.flusher(every)
	return b
}

func (b *lineBuffer) flusher(every time.Duration) {
	defer close(b.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.mu.Lock()
			if err := b.flushLocked(); err != nil && b.err == nil {
				b.err = err
			}
			b.mu.Unlock()
		}
	}
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		err := b.err
		b.err = nil
		return 0, err
	}
	if len(b.buf)+len(p) > cap(b.buf) {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) > cap(b.buf) || b.shut {
		return b.w.Write(p)
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lineBuffer) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.w.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// Close writes what is held and stops the periodic flush; a line logged
// after it is written at once.
func (b *lineBuffer) Close() error {
	close(b.stop)
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	b.shut = true
	return b.flushLocked()
}
