package peerlink

import (
	"bytes"
	"fmt"
	"os"
)

// LoadKey reads a shared key from a file: its bytes, less trailing
// whitespace, at least MinKeyLen of them. The file must not be readable
// by group or others. Errors name the file, never the key.
func LoadKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("read key file %s: mode %04o lets others read it; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	b = bytes.TrimRight(b, " \t\r\n")
	if len(b) < MinKeyLen {
		return nil, fmt.Errorf("read key file %s: %d bytes, want at least %d (for example: head -c 48 /dev/urandom | base64 > %s)", path, len(b), MinKeyLen, path)
	}
	return b, nil
}
