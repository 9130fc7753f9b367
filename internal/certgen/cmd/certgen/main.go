// Command certgen writes the example deployment's certificates: a public
// CA chain with a SAN certificate for webext, meet, dialin, lyncdiscover
// and owas.example.com, and an internal CA with certificates for the
// example's pool members.
//
//	go run ./internal/certgen/cmd/certgen -dir /etc/edgeproxy/tls
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
)

func main() {
	dir := flag.String("dir", "/etc/edgeproxy/tls", "directory to write the certificates and keys to")
	flag.StringVar(dir, "out", "/etc/edgeproxy/tls", "same as -dir")
	force := flag.Bool("force", false, "replace existing files")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "certgen: unexpected argument %q\n", flag.Arg(0))
		flag.Usage()
		os.Exit(2)
	}
	set, err := certgen.Write(*dir, certgen.Options{Force: *force})
	if err != nil {
		fmt.Fprintln(os.Stderr, "certgen:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote to %s:\n", set.Dir)
	fmt.Printf("  %-28s public root CA (give it to test clients: curl --cacert)\n", certgen.PublicRootFile)
	fmt.Printf("  %-28s SAN certificate + issuing CA for %v\n", certgen.PublicCertFile, certgen.PublicNames)
	fmt.Printf("  %-28s its key\n", certgen.PublicKeyFile)
	fmt.Printf("  %-28s internal CA (backend_tls.ca)\n", certgen.InternalCAFile)
	fmt.Printf("  %-28s its key\n", certgen.InternalKeyFile)
	names := make([]string, 0, len(set.Members))
	for m := range set.Members {
		names = append(names, m)
	}
	sort.Strings(names)
	for _, m := range names {
		fmt.Printf("  %-28s member certificate and key (.key)\n", filepath.Base(m+".pem"))
	}
}
