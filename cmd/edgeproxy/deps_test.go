package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestBinaryLinksNoTesting checks that the shipped binary does not link
// the testing package: the demo's lab code is testing-free, and the
// helpers that take a testing.TB stay in test-only packages.
func TestBinaryLinksNoTesting(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("needs the go tool to list the binary's dependencies")
		}
		t.Skip("needs the go tool to list the binary's dependencies")
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if slices.Contains(deps, "testing") {
		t.Fatalf("edgeproxy links the testing package; find the importer with `go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./cmd/edgeproxy | grep '\\btesting\\b'`")
	}
}
