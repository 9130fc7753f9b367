package l7

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A type-1 NTLM message (negotiate), as a client starts with.
const ntlmNegotiate = "NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw=="

// h2Client speaks HTTP/2 frame by frame to the proxy.
type h2Client struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	dec *hpack.Decoder
	buf bytes.Buffer
	pad uint8 // padding and a priority on the next HEADERS frame
}

func (e *env) dialH2(t *testing.T, host string) *h2Client {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.httpsAddr,
		&tls.Config{ServerName: host, RootCAs: e.public.pool(), NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q for %s, want h2", p, host)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	h := &h2Client{t: t, c: c, fr: http2.NewFramer(c, c)}
	h.enc, h.dec = hpack.NewEncoder(&h.buf), hpack.NewDecoder(4096, nil)
	io.WriteString(c, http2.ClientPreface)
	h.fr.WriteSettings()
	return h
}

// get sends a GET on stream id and returns the response status, or the
// RST_STREAM/GOAWAY error code that ended the stream.
func (h *h2Client) get(id uint32, host, path string, hdr ...string) (status string, code http2.ErrCode) {
	h.t.Helper()
	return h.sendH2(id, append([]string{":method", "GET", ":scheme", "https", ":authority", host, ":path", path}, hdr...)...)
}

// sendH2 sends one request of the fields given as they are (pseudo
// fields included, so that :method and :path go out byte for byte) on
// stream id and returns the response status, or the RST_STREAM/GOAWAY
// error code that ended the stream.
func (h *h2Client) sendH2(id uint32, fields ...string) (status string, code http2.ErrCode) {
	h.t.Helper()
	h.buf.Reset()
	for i := 0; i < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	// Blocks over 4 KiB go in a HEADERS frame and CONTINUATION frames.
	block := h.buf.Bytes()
	first := block[:min(len(block), 4096)]
	hp := http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: true, EndHeaders: len(first) == len(block), PadLength: h.pad}
	if h.pad > 0 {
		hp.Priority = http2.PriorityParam{StreamDep: 1, Weight: 7}
	}
	err := h.fr.WriteHeaders(hp)
	for rest := block[len(first):]; len(rest) > 0 && err == nil; {
		n := min(len(rest), 4096)
		err = h.fr.WriteContinuation(id, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	if err != nil {
		h.t.Fatalf("write headers: %v", err)
	}
	for range 100 {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("stream %d: read frame: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			fs, err := h.dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				h.t.Fatalf("decode response headers: %v", err)
			}
			if f.StreamID == id {
				for _, hf := range fs {
					if hf.Name == ":status" {
						return hf.Value, 0
					}
				}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "", f.ErrCode
			}
		case *http2.GoAwayFrame:
			return "", f.ErrCode
		}
	}
	h.t.Fatalf("stream %d: no response", id)
	return "", 0
}

// NTLM and Negotiate over HTTP/2 end the stream with HTTP_1_1_REQUIRED on
// every site, also when the Authorization header comes from the HPACK
// dynamic table; the connection goes on serving other requests.
func TestHTTP2WindowsAuthRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, host := range []string{owasHost, "x.apps.example.com"} {
		h := e.dialH2(t, host)
		before := e.backendRequests()
		if _, code := h.get(1, host, "/echo", "authorization", ntlmNegotiate); code != http2.ErrCodeHTTP11Required {
			t.Errorf("%s NTLM: code %v, want HTTP_1_1_REQUIRED", host, code)
		}
		if status, _ := h.get(3, host, "/echo"); status != "200" {
			t.Errorf("%s: anonymous request after the refusal: %q", host, status)
		}
		// Same value again: now an index into the dynamic table.
		if _, code := h.get(5, host, "/echo", "authorization", ntlmNegotiate); code != http2.ErrCodeHTTP11Required {
			t.Errorf("%s NTLM from the dynamic table: code %v", host, code)
		}
		h.pad = 200
		if _, code := h.get(7, host, "/echo", "x-pad", strings.Repeat("p", 20000), "authorization", "Negotiate YIIGhgYGKwYBBQUCoIIGejCC"); code != http2.ErrCodeHTTP11Required {
			t.Errorf("%s Negotiate in a header block over several frames: code %v", host, code)
		}
		if status, _ := h.get(9, host, "/echo", "authorization", "Basic eDp5"); status != "200" { // padded too
			t.Errorf("%s: Basic authorization: %q", host, status)
		}
		// A Windows-auth site reached over this connection (it offers
		// only HTTP/1.1 itself): the reset comes before the 421.
		if _, code := h.get(11, "webext.example.com", "/echo", "authorization", ntlmNegotiate); code != http2.ErrCodeHTTP11Required {
			t.Errorf("%s: NTLM for the skype site: code %v", host, code)
		}
		if n := e.backendRequests() - before; n != 2 {
			t.Errorf("%s: %d requests reached the members, want the 2 without NTLM/Negotiate", host, n)
		}
	}
}

// curl retries a request refused with HTTP_1_1_REQUIRED over HTTP/1.1,
// and the member answers it.
func TestCurlRetriesNTLMOverHTTP11(t *testing.T) {
	e := newEnv(t, envOptions{})
	port := portOf(e.httpsAddr)
	args := append(e.resolveArgs(port, owasHost), "--cacert", e.public.rootPath, "--http2", "-v",
		"-H", "Authorization: "+ntlmNegotiate, "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
		"https://"+owasHost+":"+port+"/echo")
	needTool(t, "curl")
	cmd := exec.Command("curl", append([]string{"-sS", "--max-time", "30"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("curl: %v\n%s", err, errb.String())
	}
	if out.String() != "1.1 200" {
		t.Errorf("curl: %q, want \"1.1 200\"\n%s", out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "HTTP_1_1_REQUIRED") {
		t.Errorf("curl did not see HTTP_1_1_REQUIRED:\n%s", errb.String())
	}
	if !strings.Contains(e.access.String(), `"status":505,"bytes_in":0,"bytes_out":0`) ||
		!strings.Contains(e.access.String(), `"termination":"http2_windows_auth"`) {
		t.Errorf("access log does not record the refusal:\n%s", e.access.String())
	}
}

// A site's header limit holds over HTTP/2 too, where the server's own
// limit is the largest of the virtual's sites.
func TestHTTP2HeaderLimitPerSite(t *testing.T) {
	e := newEnv(t, envOptions{})
	req := get(owasHost, "/echo")
	req.Header.Set("X-Big", strings.Repeat("A", 40<<10))
	res, err := e.tlsClient(true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ProtoMajor != 2 || res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("40 KiB header over %s on a site with the 32 KiB default: %d, want 431", res.Proto, res.StatusCode)
	}
}

// A connection that negotiated HTTP/1.1 cannot switch to HTTP/2 by
// sending its preface.
func TestHTTP2PrefaceOnHTTP1Closed(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dialTLS(owasHost)
	io.WriteString(c.c, http2.ClientPreface)
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(c.r)
	if len(b) >= 9 && b[3] == byte(http2.FrameSettings) {
		t.Fatalf("HTTP/2 spoken on an HTTP/1.1 connection: % x", b[:9])
	}
}

// recordConn records what is written to it.
type recordConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *recordConn) Write(b []byte) (int, error) { return c.buf.Write(b) }

// The reset of a noted stream gets HTTP_1_1_REQUIRED however the server's
// writes cut the frames; other frames pass unchanged.
func TestH2ConnRewritesResetAcrossWrites(t *testing.T) {
	var frames bytes.Buffer
	fr := http2.NewFramer(&frames, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
	fr.WriteRSTStream(1, http2.ErrCodeInternal)
	fr.WriteData(3, false, []byte("\x00\x00\x04\x03\x00\x00\x00\x00\x01"))
	fr.WriteRSTStream(3, http2.ErrCodeInternal)
	fr.WriteRSTStream(5, http2.ErrCodeInternal)
	for _, step := range []int{1, 2, 5, 13, 1 << 20} {
		rc := &recordConn{}
		c := newH2Conn(rc, nil, 4096)
		c.note(1)
		c.note(5)
		in := frames.Bytes()
		for i := 0; i < len(in); i += step {
			c.Write(in[i:min(i+step, len(in))])
		}
		got := map[uint32]http2.ErrCode{}
		r := http2.NewFramer(nil, bytes.NewReader(rc.buf.Bytes()))
		for {
			f, err := r.ReadFrame()
			if err != nil {
				break
			}
			if rst, ok := f.(*http2.RSTStreamFrame); ok {
				got[rst.StreamID] = rst.ErrCode
			}
			if d, ok := f.(*http2.DataFrame); ok && string(d.Data()) != "\x00\x00\x04\x03\x00\x00\x00\x00\x01" {
				t.Errorf("writes of %d bytes: DATA changed: % x", step, d.Data())
			}
		}
		want := map[uint32]http2.ErrCode{1: http2.ErrCodeHTTP11Required, 3: http2.ErrCodeInternal, 5: http2.ErrCodeHTTP11Required}
		for id, code := range want {
			if got[id] != code {
				t.Errorf("writes of %d bytes: stream %d reset with %v, want %v", step, id, got[id], code)
			}
		}
	}
}
