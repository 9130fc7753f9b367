package netcfg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const procSys = "/proc/sys"

// readSysctls reads keys inside the Host's namespace. A key that does not
// exist maps to ok=false.
func (h *Host) readSysctls(keys []string) (map[string]string, error) {
	out := make(map[string]string, len(keys))
	err := h.inNS(func() error {
		for _, k := range keys {
			b, err := os.ReadFile(filepath.Join(procSys, k))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("read sysctl %s: %w", k, err)
			}
			out[k] = strings.TrimSpace(string(b))
		}
		return nil
	})
	return out, err
}

// writeSysctl sets one key inside the Host's namespace.
func (h *Host) writeSysctl(key, value string) error {
	return h.inNS(func() error {
		f, err := os.OpenFile(filepath.Join(procSys, key), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return fmt.Errorf("write sysctl %s: %w", key, err)
		}
		_, err = f.WriteString(value + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write sysctl %s = %q: %w", key, value, err)
		}
		return nil
	})
}
