// Package l7 is edgeproxy's HTTP(S) proxy: the listeners of the "https"
// and "http" virtuals, TLS termination with a certificate store chosen by
// SNI, routing of requests to sites by Host, and the upstream side with
// load balancing, health, and connection pinning for NTLM/Negotiate.
//
// Connection-based authentication (NTLM, Negotiate, Kerberos) binds the
// authenticated identity to the TCP connection between the client and the
// server. A proxy that shares upstream connections between clients either
// breaks the handshake or hands one user's authenticated connection to
// another. A client connection that authenticates this way therefore gets
// its own upstream connection: dialled for that client connection only,
// HTTP/1.1, never returned to a pool, never retried on another member,
// and closed with the client connection (or after pinnedIdleTimeout idle).
//
// Every request goes through the same steps: on HTTP/1 connections the
// framing guard's verdict (h1guard), NTLM/Negotiate over HTTP/2 reset
// with HTTP_1_1_REQUIRED (h2Conn), CONNECT/TRACE/TRACK/DEBUG refused in
// any case, the site found by Host (404 when unknown, 421 when the TLS
// SNI names another site), the site's methods and header size checked,
// on strict sites a target not in canonical form refused and denied paths
// matched, an Upgrade the site does not allow removed, the body limited,
// forwarding headers of untrusted clients dropped and X-Forwarded-* set, a member picked
// (round robin or least connections over healthy members, with an
// optional MS-WSMAN cookie affinity), and the response streamed back.
// Timeouts are per read and per write (stall timeouts) plus a response
// header timeout; no request has a whole-request deadline, so uploads of
// hundreds of megabytes and long polls of many minutes pass.
package l7
