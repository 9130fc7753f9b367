package demo

import (
	"path/filepath"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// configText is the demo's configuration: the lab's network, one pool of
// two front ends, a fastl4 virtual (443→4443 and 80→8080 in XDP) and the
// https/http virtuals of the L7 proxy. The monitor is quick so that a
// member failure shows within seconds.
func (s *session) configText() []byte {
	l := s.lab
	tlsDir := filepath.Join(s.dir, "tls")
	internalCA := filepath.Join(tlsDir, certgen.InternalCAFile)
	return []byte("# edgeproxy demo: the lab's proxy host publishing a Skype for Business pool.\n" + l.SkypeYAML(lab.Skype{
		Admin:   adminAddr,
		Network: lab.NetworkOptions{Hosts: l.MemberHosts(memberNames...)},
		PinPath: s.pinPath,
		Pool:    poolName,
		Members: memberNames,
		Monitor: lab.SkypeMonitor{TLS: true, CA: internalCA, Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 1, Fall: 1},
		FastL4:  &lab.SkypeFastL4{VIP: FastVIP, HTTP: true},
		L7: &lab.SkypeL7{VIP: l.VIP4, Hosts: certgen.SkypeNames,
			Cert: filepath.Join(tlsDir, certgen.PublicCertFile), Key: filepath.Join(tlsDir, certgen.PublicKeyFile),
			InternalCA: internalCA, Skype: true, HTTP: true, Drain: 2 * time.Second},
	}))
}
