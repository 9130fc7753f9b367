package admin

import (
	"bytes"
	"context"
	_ "embed"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Refresh bounds of the status page, in seconds (?refresh=N).
const (
	defaultRefresh = 5
	minRefresh     = 1
	maxRefresh     = 300
	// certWarning is how close to its expiry a certificate is shown as
	// expiring (the alert rules say the same).
	certWarning = 14 * 24 * time.Hour
)

//go:embed page.html
var pageHTML string

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"ago": func(now, t time.Time) string { return ago(now, t, true) },
	"left": func(now, t time.Time) string {
		d := t.Sub(now)
		if d < 0 {
			return "expired " + ago(now, t, true)
		}
		return strconv.Itoa(int(d.Hours()/24)) + " days"
	},
	"expiring": func(now, t time.Time) bool { return t.Sub(now) < certWarning },
	"stamp":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"join":     func(s []string) string { return strings.Join(s, ", ") },
}).Parse(pageHTML))

// pageData is what the template renders.
type pageData struct {
	*Status
	Refresh int
}

// page serves the status page: the state /status gives, as an HTML page
// that reloads itself every ?refresh= seconds (5 by default).
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	if s.opts.Status == nil {
		s.index(w, r)
		return
	}
	refresh := defaultRefresh
	if n, err := strconv.Atoi(r.URL.Query().Get("refresh")); err == nil {
		refresh = min(max(n, minRefresh), maxRefresh)
	}
	ctx, cancel := context.WithTimeout(r.Context(), statusTimeout)
	defer cancel()
	st, err := s.opts.Status(ctx)
	if err != nil {
		s.log.Warn("build status page", "err", err)
		http.Error(w, "build status: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	var b bytes.Buffer
	if err := pageTmpl.Execute(&b, pageData{Status: st, Refresh: refresh}); err != nil {
		s.log.Error("render status page", "err", err)
		http.Error(w, "render status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	_, _ = w.Write(b.Bytes())
}
