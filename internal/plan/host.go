package plan

import (
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/hostprobe"
)

// HostNeeds is what cfg asks of the host, for the host probe `run` and
// `check` share.
func HostNeeds(cfg *config.Config) hostprobe.Needs {
	n := hostprobe.Needs{FastPath: cfg.NeedsXDP(), PinPath: cfg.FastPath.PinPath}
	nics := cfg.Network.External.Interface != "" || cfg.Network.Internal.Interface != ""
	n.NetAdmin = n.FastPath || nics && cfg.Network.Managed()
	for _, v := range cfg.Virtuals {
		if v == nil || !v.IsL7() || !v.Listen.IsValid() {
			continue
		}
		if p := int(v.Listen.Port()); n.LowestPort == 0 || p < n.LowestPort {
			n.LowestPort = p
		}
	}
	return n
}
