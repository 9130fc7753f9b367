package l7

import "testing"

// TestConnAuthSchemeSeparators: a connection-bound scheme is recognised
// whatever whitespace follows it, so that no spelling of an NTLM or
// Negotiate exchange goes through the shared upstream pool, where one
// client's login would serve another.
func TestConnAuthSchemeSeparators(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
	}{
		{"NTLM TlRMTVNTUAAB", true},
		{"NTLM\tTlRMTVNTUAAB", true},
		{"negotiate\tYIIG", true},
		{" Negotiate  YIIG", true},
		{"NTLM", true},
		{"NTLM, Basic realm=x", true},
		{"Basic dXNlcjpwYXNz", false},
		{"Basic\tdXNlcjpwYXNz", false},
		{"NTLMX abc", false},
		{"Bearer NTLM", false},
	} {
		if got := isConnAuth(c.v); got != c.want {
			t.Errorf("isConnAuth(%q) = %v, want %v", c.v, got, c.want)
		}
	}
}
