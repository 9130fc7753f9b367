package l7

// cause is why a request ended other than by a member's full answer: the
// access log's termination field.
type cause string

// The causes, as the access log spells them.
const (
	causeNone cause = ""
	// The client's request was refused before any member saw it.
	causeSmuggling    cause = "smuggling"          // ambiguous framing on the connection (400)
	causeH2ConnAuth   cause = "http2_windows_auth" // NTLM/Negotiate over HTTP/2 (stream reset)
	causeMethod       cause = "method"             // a refused method or one the site does not forward (405), not a token (400)
	causeAsterisk     cause = "asterisk"           // OPTIONS * answered by the proxy, or another method with * (400)
	causeUnknownHost  cause = "unknown_host"       // no site for the Host (404), or a Host that is no valid field (400)
	causeMisdirected  cause = "misdirected"        // Host of another site than the connection's SNI (421)
	causeHeaderLimit  cause = "header_limit"       // request head over the site's limit (431)
	causeBadPath      cause = "bad_path"           // target not in canonical form, control characters or a space (400)
	causeDenied       cause = "denied"             // path denied by the site (403)
	causeRedirect     cause = "redirect"           // http site redirecting to https (301, 308)
	causeBodyLimit    cause = "body_limit"         // request body over the site's limit (413)
	causeClientStall  cause = "client_stall"       // the client stopped sending its body (408)
	causeClientBody   cause = "client_body"        // the client's body could not be read (400)
	causeClientClosed cause = "client_closed"      // the client went away before the answer (499)
	causeAborted      cause = "aborted"            // the handler ended the connection (499)
	// The member side failed.
	causeNoMember        cause = "no_member"        // no healthy member (503)
	causeUpstreamError   cause = "upstream_error"   // the member could not be reached or answered badly (502)
	causeUpstreamTimeout cause = "upstream_timeout" // the member did not answer in time (504)
	causeUpstreamStall   cause = "upstream_stall"   // the member stopped sending its body
)
