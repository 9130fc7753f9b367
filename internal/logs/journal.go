package logs

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
)

// journalWriter prefixes each line it is given with the severity the
// handler set for the record being written, "<3>" for an error: journald
// reads it from a service's stderr as the entry's priority.
type journalWriter struct {
	w      io.Writer
	mu     sync.Mutex
	prefix []byte
}

func (j *journalWriter) Write(p []byte) (int, error) {
	if _, err := j.w.Write(append(append([]byte(nil), j.prefix...), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// journalHandler writes each record through its journalWriter under the
// record's syslog severity.
type journalHandler struct {
	slog.Handler
	w *journalWriter
}

// severity maps a slog level to syslog's: error 3, warning 4, info 6,
// debug 7.
func severity(lv slog.Level) int {
	switch {
	case lv >= slog.LevelError:
		return 3
	case lv >= slog.LevelWarn:
		return 4
	case lv >= slog.LevelInfo:
		return 6
	}
	return 7
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.w.prefix = []byte("<" + strconv.Itoa(severity(r.Level)) + ">")
	return h.Handler.Handle(ctx, r)
}

func (h *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &journalHandler{Handler: h.Handler.WithAttrs(attrs), w: h.w}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{Handler: h.Handler.WithGroup(name), w: h.w}
}
