package l7

import "errors"

// Errors returned by Apply and the upstream side.
var (
	ErrNoCertificate   = errors.New("https virtual has no certificate")
	ErrUnresolved      = errors.New("member name not resolvable")
	ErrBadValue        = errors.New("invalid value")
	ErrDuplicateHost   = errors.New("host published twice")
	ErrDuplicateListen = errors.New("address used by two virtuals")
	ErrNoMember        = errors.New("no healthy member")
	ErrClosed          = errors.New("proxy shut down")
	ErrSmuggling       = errors.New("request has both Content-Length and Transfer-Encoding")
)
