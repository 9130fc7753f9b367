package peerlink

// window is one sender's replay state: its current epoch, the highest
// sequence number seen in it and which of the ReplayWindow numbers up to
// that one were seen (a ring of bits indexed by sequence number).
type window struct {
	epoch, top uint64
	seen       [ReplayWindow / 64]uint64
	started    bool
}

// accept reports whether (epoch, seq) is new and records it.
func (w *window) accept(epoch, seq uint64) bool {
	switch {
	case !w.started || epoch > w.epoch:
		*w = window{epoch: epoch, top: seq, started: true}
		w.mark(seq)
		return true
	case epoch < w.epoch:
		return false
	case seq > w.top:
		if seq-w.top >= ReplayWindow {
			w.seen = [ReplayWindow / 64]uint64{}
		} else {
			for s := w.top + 1; s < seq; s++ {
				w.clear(s)
			}
		}
		w.top = seq
		w.mark(seq)
		return true
	case w.top-seq >= ReplayWindow || w.has(seq):
		return false
	}
	w.mark(seq)
	return true
}

func (w *window) mark(s uint64)     { w.seen[s/64%uint64(len(w.seen))] |= 1 << (s % 64) }
func (w *window) clear(s uint64)    { w.seen[s/64%uint64(len(w.seen))] &^= 1 << (s % 64) }
func (w *window) has(s uint64) bool { return w.seen[s/64%uint64(len(w.seen))]&(1<<(s%64)) != 0 }
