package plan

import (
	"os/exec"
	"strings"
	"testing"
)

// planes are the packages that take specs from this package and must
// not depend on the configuration file's format.
var planes = []string{"l7", "health", "l4", "netcfg", "admin", "bgp"}

const configPkg = "github.com/edgeproxy/edgeproxy/config"

// No plane depends on config, in its code or its own tests.
func TestPlanesDoNotImportConfig(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the go command is needed to list imports: %v", err)
	}
	for _, p := range planes {
		pkg := "github.com/edgeproxy/edgeproxy/" + p
		deps := goList(t, "-deps", "-f", "{{.ImportPath}}", pkg)
		if deps[configPkg] {
			t.Errorf("%s depends on %s: give it a spec built in internal/plan instead", pkg, configPkg)
		}
		tests := goList(t, "-f", `{{join .TestImports "\n"}}{{"\n"}}{{join .XTestImports "\n"}}`, pkg)
		if tests[configPkg] {
			t.Errorf("the tests of %s import %s: build specs in Go instead", pkg, configPkg)
		}
	}
}

func goList(t *testing.T, args ...string) map[string]bool {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", strings.Join(args, " "), err)
	}
	set := map[string]bool{}
	for _, l := range strings.Fields(string(out)) {
		set[l] = true
	}
	return set
}
