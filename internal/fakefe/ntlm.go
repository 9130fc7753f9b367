package fakefe

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/ntlm"
)

// The front end speaks enough NTLM (package ntlm) for real clients
// (curl --ntlm) and for NTLMClient: negotiate, challenge and authenticate
// with NTLMv2 responses.

// ErrNTLMUser is an AUTHENTICATE message for an account the front end
// does not know.
var ErrNTLMUser = errors.New("unknown user")

// NTLMClient runs the client side of the exchange, for tests and the
// demo: NegotiateHeader, then AuthenticateHeader with the server's
// challenge, on one connection.
type NTLMClient struct {
	User, Password, Domain, Workstation string
	// Scheme is "NTLM" (default) or "Negotiate".
	Scheme string
}

func (c *NTLMClient) scheme() string {
	if c.Scheme == "" {
		return "NTLM"
	}
	return c.Scheme
}

// NegotiateHeader returns the Authorization value of the first message.
func (c *NTLMClient) NegotiateHeader() string {
	return c.scheme() + " " + base64.StdEncoding.EncodeToString(ntlm.NegotiateMessage())
}

// AuthenticateHeader answers the challenge found in the WWW-Authenticate
// values of a 401 with the Authorization value of the third message.
func (c *NTLMClient) AuthenticateHeader(wwwAuthenticate []string) (string, error) {
	var chal *ntlm.Challenge
	for _, v := range wwwAuthenticate {
		s, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
		if !ok || !strings.EqualFold(s, c.scheme()) {
			continue
		}
		if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(tok)); err == nil {
			if chal, err = ntlm.ParseChallenge(b); err == nil {
				break
			}
		}
	}
	if chal == nil {
		return "", fmt.Errorf("find %s challenge in %q: %w", c.scheme(), wwwAuthenticate, ntlm.ErrMessage)
	}
	m, err := ntlm.AuthenticateMessage(chal, ntlm.Credentials{
		Domain: c.Domain, User: c.User, Password: c.Password, Workstation: c.Workstation,
	}, nil, time.Now())
	if err != nil {
		return "", err
	}
	return c.scheme() + " " + base64.StdEncoding.EncodeToString(m), nil
}
