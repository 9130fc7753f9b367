// Package logs is the daemon's logging: the daemon log on stderr (with
// journald severity prefixes under systemd), its level, and the access
// log and the fastl4 connection log, which a reload redirects and
// SIGUSR1 reopens after rotation.
package logs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/edgeproxy/edgeproxy/config"
)

// Logs are the daemon's loggers, changed in place on reload.
type Logs struct {
	level    slog.LevelVar
	pinLevel bool // the level came from the command line
	format   string
	stderr   slog.Handler

	// Logger is the daemon log; Access the access log; FastL4 the
	// fastl4 connection log.
	Logger *slog.Logger
	Access *slog.Logger
	FastL4 *slog.Logger

	mu     sync.Mutex
	access sink
	fastl4 sink
}

// sink is where one of the logs goes: its handler now, and the file
// behind it when it is one.
type sink struct {
	cur  atomic.Pointer[slog.Handler]
	path string
	file *File
}

// New returns the loggers for the file's log section: format and
// level, when not "", override the file's (command-line flags). Under
// systemd (JOURNAL_STREAM set) every line written to stderr starts with
// its syslog severity.
func New(stderr io.Writer, format, level string, cfg config.Log) (*Logs, error) {
	l := &Logs{format: cfg.Format, pinLevel: level != ""}
	if format != "" {
		l.format = format
	}
	if level == "" {
		level = cfg.Level
	}
	if err := l.setLevel(level); err != nil {
		return nil, err
	}
	if os.Getenv("JOURNAL_STREAM") != "" {
		stderr = &journalWriter{w: stderr}
	}
	h, err := handler(stderr, l.format, &l.level)
	if err != nil {
		return nil, err
	}
	if jw, ok := stderr.(*journalWriter); ok {
		h = &journalHandler{Handler: h, w: jw}
	}
	l.stderr = h
	l.Logger = slog.New(h)
	l.Access = slog.New(&switchHandler{cur: &l.access.cur})
	l.FastL4 = slog.New(&switchHandler{cur: &l.fastl4.cur})
	if err := l.setDests(cfg); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// handler is a text or JSON handler on w.
func handler(w io.Writer, format string, level slog.Leveler) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("parse log format %q: use text or json", format)
}

func (l *Logs) setLevel(level string) error {
	var lv slog.Level
	if level != "" {
		if err := lv.UnmarshalText([]byte(level)); err != nil {
			return fmt.Errorf("parse log level %q: use debug, info, warn or error", level)
		}
	}
	l.level.Set(lv)
	return nil
}

// Apply applies the log section of a reloaded file: log.level (unless
// the command line set it), log.access and log.fastl4.path (a new
// destination is opened, the same file is reopened). log.format needs a
// restart.
func (l *Logs) Apply(cfg config.Log) error {
	if !l.pinLevel {
		if err := l.setLevel(cfg.Level); err != nil {
			return err
		}
	}
	return l.setDests(cfg)
}

func (l *Logs) setDests(cfg config.Log) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(l.setDest(&l.access, cfg.Access, "log.access"), l.setDest(&l.fastl4, cfg.FastL4.Path, "log.fastl4.path"))
}

// setDest points the log s at dest: "" or "stderr" the daemon log,
// "off" nowhere, else a file (JSON lines), reopened if it is the one
// already open. key names the setting in errors.
func (l *Logs) setDest(s *sink, dest, key string) error {
	if dest != "" && dest != "off" && dest != "stderr" {
		if s.file != nil && s.path == dest {
			return s.file.Reopen()
		}
		f, err := OpenFile(dest)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		h := slog.Handler(NewJSONLines(f))
		s.cur.Store(&h)
		s.closeFile()
		s.file, s.path = f, dest
		return nil
	}
	h := l.stderr
	if dest == "off" {
		h = slog.DiscardHandler
	}
	s.cur.Store(&h)
	s.closeFile()
	return nil
}

func (s *sink) closeFile() {
	if s.file != nil {
		_ = s.file.Close()
		s.file, s.path = nil, ""
	}
}

// Reopen reopens the log files (after logrotate moved them; SIGUSR1).
func (l *Logs) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, s := range []*sink{&l.access, &l.fastl4} {
		if s.file != nil {
			errs = append(errs, s.file.Reopen())
		}
	}
	return errors.Join(errs...)
}

// Close closes the log files.
func (l *Logs) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.access.closeFile()
	l.fastl4.closeFile()
}

// switchHandler sends records to the handler cur points at now, with the
// attributes and groups added by With and WithGroup.
type switchHandler struct {
	cur  *atomic.Pointer[slog.Handler]
	wrap []func(slog.Handler) slog.Handler
}

func (h *switchHandler) handler() slog.Handler {
	out := *h.cur.Load()
	for _, w := range h.wrap {
		out = w(out)
	}
	return out
}

// JSONLineWriter is the writer of the handler cur points at now, when
// it is a JSONLines and no attributes or groups were added; else nil.
func (h *switchHandler) JSONLineWriter() io.Writer {
	if len(h.wrap) > 0 {
		return nil
	}
	if jl, ok := (*h.cur.Load()).(*JSONLines); ok {
		return jl.JSONLineWriter()
	}
	return nil
}

func (h *switchHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return (*h.cur.Load()).Enabled(ctx, lv)
}

func (h *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.handler().Handle(ctx, r)
}

func (h *switchHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.with(func(x slog.Handler) slog.Handler { return x.WithAttrs(attrs) })
}

func (h *switchHandler) WithGroup(name string) slog.Handler {
	return h.with(func(x slog.Handler) slog.Handler { return x.WithGroup(name) })
}

func (h *switchHandler) with(f func(slog.Handler) slog.Handler) slog.Handler {
	wrap := append(append([]func(slog.Handler) slog.Handler(nil), h.wrap...), f)
	return &switchHandler{cur: h.cur, wrap: wrap}
}

// JSONLines is slog's JSON handler on a writer that takes each line in
// one Write (a File). A caller may write a line it encoded itself as
// that handler encodes a record (time, level, msg, then the attributes,
// no groups), in one Write: the access log's path without slog.Record.
type JSONLines struct {
	slog.Handler
	w io.Writer
}

// NewJSONLines returns slog's JSON handler (no options) on w, which
// must take concurrent Writes (lines are written outside the handler's
// lock).
func NewJSONLines(w io.Writer) *JSONLines {
	return &JSONLines{Handler: slog.NewJSONHandler(w, nil), w: w}
}

// JSONLineWriter is where the lines go.
func (j *JSONLines) JSONLineWriter() io.Writer { return j.w }
