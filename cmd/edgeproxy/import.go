package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/f5"
)

func init() {
	register(command{name: "import", summary: "translate another product's configuration (import f5 bigip.conf) into an edgeproxy configuration", run: runImport})
}

var errSameFile = errors.New("the output would overwrite the input")

func runImport(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "f5" {
		w := os.Stderr
		fmt.Fprintln(w, "usage: edgeproxy import f5 FILE... [-o out.yaml] [-report FILE] [-cert-dir DIR] [-external IF] [-internal IF]")
		fmt.Fprintln(w, "\nsources:\n  f5    a BIG-IP configuration: bigip.conf (with bigip_base.conf for the network) or `tmsh list` output")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			return nil
		}
		if len(args) > 0 {
			return fmt.Errorf("import: unknown source %q (supported: f5)", args[0])
		}
		return errUsage
	}
	return runImportF5(args[1:])
}

func runImportF5(args []string) error {
	fs := newFlagSet("import f5", "FILE... [-o out.yaml] [-report FILE] [-cert-dir DIR] [-external IF] [-internal IF]\n\n"+
		"Reads a BIG-IP configuration in tmsh form (bigip_base.conf and bigip.conf together, or `tmsh list`\n"+
		"output; - reads stdin) and writes the edgeproxy configuration doing the same job.\n"+
		"What could not be carried over, or only approximately, goes to the report (stderr by default),\n"+
		"each entry with the line of the BIG-IP object, followed by what `edgeproxy check` says of the output.")
	out := fs.String("o", "", "write the configuration to this file (default: stdout)")
	reportPath := fs.String("report", "", "write the report to this file (default: stderr)")
	certDir := fs.String("cert-dir", f5.DefaultCertDir, "directory where the certificates and keys of https virtuals are expected (PEM); when they are already there, their names become the sites' hosts")
	ext := fs.String("external", "ext0", "name of the external NIC")
	in := fs.String("internal", "int0", "name of the internal NIC")

	// Flags may follow the file name.
	var files []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(files) == 0 {
		fmt.Fprintln(fs.Output(), "name the BIG-IP configuration files (bigip_base.conf bigip.conf), or - for stdin")
		fs.Usage()
		return errUsage
	}
	var parsed []*f5.File
	for _, src := range files {
		var data []byte
		var err error
		if src == "-" {
			data, err = io.ReadAll(io.LimitReader(os.Stdin, 256<<20))
			src = "stdin"
		} else {
			data, err = os.ReadFile(src)
		}
		if err != nil {
			return fmt.Errorf("read BIG-IP configuration: %w", err)
		}
		f, err := f5.Parse(src, data)
		if err != nil {
			return fmt.Errorf("import f5: %w", err)
		}
		if *out != "" && sameFile(src, *out) {
			return fmt.Errorf("write %s: %w", *out, errSameFile)
		}
		parsed = append(parsed, f)
	}
	dir, err := filepath.Abs(*certDir)
	if err != nil {
		return fmt.Errorf("import f5: certificate directory: %w", err)
	}
	res := f5.Translate(f5.Merge(parsed...), f5.Options{ExternalInterface: *ext, InternalInterface: *in, CertDir: dir})
	y, err := res.YAML()
	if err != nil {
		return fmt.Errorf("import f5: %w", err)
	}

	// The report: what was not carried over, then what check says.
	rw := io.Writer(os.Stderr)
	if *reportPath != "" {
		f, err := os.Create(*reportPath)
		if err != nil {
			return fmt.Errorf("create report: %w", err)
		}
		defer f.Close()
		rw = f
	}
	if _, err := res.Report.WriteTo(rw); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	name := *out
	if name == "" {
		name = "the imported configuration"
	}
	chk := config.Analyze(*out, y)
	fmt.Fprintf(rw, "\n# edgeproxy check of %s: %d error(s), %d warning(s)\n", name, len(chk.Errors), len(chk.Warnings))
	for _, e := range chk.Errors {
		fmt.Fprintf(rw, "error: %s\n", e)
	}
	for _, e := range chk.Warnings {
		fmt.Fprintf(rw, "warning: %s\n", e)
	}

	if *out == "" {
		_, err := os.Stdout.Write(y)
		return err
	}
	return writeFileAtomic(*out, y)
}

func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// writeFileAtomic replaces path with data through a temporary file in the
// same directory.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write configuration: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write configuration: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	return nil
}
