// Package admin serves the daemon's read-only management endpoint: the
// status page (/), /metrics (Prometheus), /healthz (readiness) and
// /status (JSON). It
// listens on loopback unless told otherwise; reloads are asked for with
// SIGHUP, not through this endpoint.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeproxy/edgeproxy/internal/metric"
)

// DefaultListen is the admin address when the configuration gives none.
const DefaultListen = "127.0.0.1:9469"

// Timeouts and limits of the admin server.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	statusTimeout     = 10 * time.Second
	shutdownTimeout   = 5 * time.Second
)

// ErrClosed is returned by Listen and Serve after Close.
var ErrClosed = errors.New("admin server closed")

// Options configure a Server.
type Options struct {
	// Listen is the address to listen on; "" means DefaultListen.
	Listen string
	// Listener, when set, is used instead of opening Listen (for a
	// socket opened inside a network namespace or inherited).
	Listener net.Listener
	// Registry holds every metric of the daemon; nil: NewRegistry(Version).
	Registry *prometheus.Registry
	// Version is reported in edgeproxy_build_info and /status.
	Version string
	// Ready returns nil when the daemon serves, or why it does not;
	// /healthz answers 200 or 503 accordingly. Nil: always ready.
	Ready func() error
	// Status returns what /status serves. Nil: /status answers 503.
	Status func(ctx context.Context) (*Status, error)
	// Pprof serves net/http/pprof under /debug/pprof/.
	Pprof bool
	// Logger: nil means slog.Default().
	Logger *slog.Logger
}

// Server is the admin endpoint.
type Server struct {
	opts Options
	reg  *prometheus.Registry
	log  *slog.Logger
	srv  *http.Server

	mu     sync.Mutex
	ln     net.Listener
	closed bool
}

// NewRegistry returns a registry with edgeproxy_build_info and the Go
// runtime and process collectors; the daemon registers its own
// collectors (health, fast path, L7) on it.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	if version == "" {
		version = "dev"
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        metric.Name("build_info"),
		Help:        "Build of the running edgeproxy; always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	info.Set(1)
	reg.MustRegister(info,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// New returns a Server; it listens when Listen or Serve is called.
func New(opts Options) *Server {
	s := &Server{opts: opts, reg: opts.Registry, log: opts.Logger}
	if s.reg == nil {
		s.reg = NewRegistry(opts.Version)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.opts.Listen == "" {
		s.opts.Listen = DefaultListen
	}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s
}

// Registry returns the registry /metrics serves.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Handler returns the endpoint's handler: GET (and HEAD) only, 405 for
// other methods, 404 for unknown paths.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.page)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             statusTimeout,
	}))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /status", s.status)
	if s.opts.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "edgeproxy admin endpoint\n\n/         status page (HTML)\n/metrics  Prometheus metrics\n/healthz  readiness\n/status   state as JSON (edgeproxy status)")
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.opts.Ready != nil {
		if err := s.opts.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if s.opts.Status == nil {
		http.Error(w, "status not available", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), statusTimeout)
	defer cancel()
	st, err := s.opts.Status(ctx)
	if err != nil {
		s.log.Warn("build status", "err", err)
		http.Error(w, "build status: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	body, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		http.Error(w, "encode status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(body, '\n'))
}

// Listen opens the listening socket (unless Options.Listener was given)
// and returns its address. Serve calls it when needed; calling it first
// reports a busy port at startup.
func (s *Server) Listen() (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.ln != nil {
		return s.ln.Addr(), nil
	}
	ln := s.opts.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", s.opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("listen on admin address %s: %w (set admin.listen to a free address)", s.opts.Listen, err)
		}
	}
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
		s.log.Warn("admin endpoint listens beyond loopback: metrics and status are readable from the network", "address", ln.Addr().String())
	}
	s.ln = ln
	return ln.Addr(), nil
}

// Addr returns the listening address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve answers requests until ctx is done, then shuts down gracefully
// (waiting up to 5 s for requests in progress) and returns nil; it
// returns the error if serving fails.
func (s *Server) Serve(ctx context.Context) error {
	if _, err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	s.log.Info("admin endpoint listening", "address", ln.Addr().String())
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(ln) }()
	select {
	case err := <-done:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve admin endpoint: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	<-done
	if err != nil {
		return fmt.Errorf("shut down admin endpoint: %w", err)
	}
	return nil
}

// Close stops the server at once, closing open connections.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	ln := s.ln
	s.mu.Unlock()
	err := s.srv.Close()
	if ln != nil {
		// Close the listener too when Serve never ran.
		if cerr := ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("close admin endpoint: %w", err)
	}
	return nil
}
