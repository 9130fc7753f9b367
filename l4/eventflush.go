package l4

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf/ringbuf"
)

// errNoEventReader is FlushEvents' answer while no reader runs.
var errNoEventReader = errors.New("the flow event reader is not running")

// eventFlush lets callers wait until the flow events in the ring when
// they asked have been handed on (FlushEvents): the reader takes the
// waiters before each read and releases them once a read finds the
// ring empty, so every event submitted before a waiter came has been
// read by then.
type eventFlush struct {
	mu      sync.Mutex
	rd      *ringbuf.Reader // nil while no reader runs
	waiting []chan error
}

// FlushEvents returns once every flow event the program had reported
// when it was called has been written to the connection log and handed
// to the mirror sink; the reader otherwise polls the ring (eventPoll).
// A planned switchover calls it so that the peer learns of the flows
// opened in the last moments before it takes them over.
func (f *FastPath) FlushEvents(ctx context.Context) error {
	ch, err := f.evFlush.add()
	if err != nil {
		return fmt.Errorf("flush flow events: %w", err)
	}
	select {
	case err := <-ch:
		if err != nil {
			return fmt.Errorf("flush flow events: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush flow events: %w", ctx.Err())
	}
}

// add registers a waiter and cuts the reader's poll short.
func (e *eventFlush) add() (chan error, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rd == nil {
		return nil, errNoEventReader
	}
	ch := make(chan error, 1)
	e.waiting = append(e.waiting, ch)
	_ = e.rd.Flush() // a closed reader releases the waiters as it stops
	return ch, nil
}

// attach records the running reader; detach releases the waiters left
// with err as the reader stops.
func (e *eventFlush) attach(rd *ringbuf.Reader) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rd = rd
}

func (e *eventFlush) detach(pending []chan error, err error) {
	e.mu.Lock()
	pending = append(pending, e.waiting...)
	e.rd, e.waiting = nil, nil
	e.mu.Unlock()
	release(pending, err)
}

// take returns the waiters registered so far.
func (e *eventFlush) take() []chan error {
	e.mu.Lock()
	defer e.mu.Unlock()
	w := e.waiting
	e.waiting = nil
	return w
}

func release(waiters []chan error, err error) {
	for _, ch := range waiters {
		ch <- err
	}
}
