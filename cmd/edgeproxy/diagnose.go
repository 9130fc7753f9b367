package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/diagnose"
)

func init() {
	register(command{name: "diagnose", summary: "troubleshoot the published services from the proxy host, with a verdict and a fix per finding", run: runDiagnose})
}

// diagnosePasswordEnv holds the test account's password for -user.
const diagnosePasswordEnv = "EDGEPROXY_DIAGNOSE_PASSWORD"

func runDiagnose(ctx context.Context, args []string) error {
	fs := newFlagSet("diagnose", "-config FILE [-json] [-v] [-resolver HOST:PORT] [-ca-bundle FILE] [-checks LIST] [-user DOMAIN\\USER] [-netns NAME] [-client-netns NAME] [-names LIST]")
	cfgPath := fs.String("config", "", "the configuration file (required)")
	asJSON := fs.Bool("json", false, "print the findings as JSON")
	verbose := fs.Bool("v", false, "show the evidence of passing findings in full")
	resolver := fs.String("resolver", "", "a DNS server (host:port) answering for the published names as the Internet sees them; the names are not resolved without it")
	bundle := fs.String("ca-bundle", "", "PEM file of the roots the public certificates must chain to (default: the system's)")
	checks := fs.String("checks", "all", "comma-separated checks to run: "+checkList())
	user := fs.String("user", "", "a test account, DOMAIN\\user, to complete the NTLM handshake through the proxy (password in $"+diagnosePasswordEnv+")")
	nsName := fs.String("netns", "", "diagnose the proxy host that is this network namespace (ip netns name)")
	clientNS := fs.String("client-netns", "", "run the application requests from this network namespace, as an Internet client (also reaches fastl4 virtuals)")
	names := fs.String("names", "", "comma-separated names clients use for the fastl4 virtuals, e.g. webext.example.com,lyncdiscover.example.com (default: the names of the sites publishing the same pool, else those of the front ends' certificate)")
	timeout := fs.Duration("timeout", 3*time.Second, "bound on each connection, handshake and request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 || *cfgPath == "" {
		if fs.NArg() != 0 {
			fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		} else {
			fmt.Fprintln(fs.Output(), "-config is required")
		}
		fs.Usage()
		return errUsage
	}
	sel, err := diagnose.Select(*checks)
	if err != nil {
		return err
	}

	data, err := os.ReadFile(*cfgPath)
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	rep := config.Analyze(*cfgPath, data)
	if rep.Config == nil {
		return fmt.Errorf("diagnose: %w", rep.Err())
	}
	var pre []diagnose.Finding
	for _, e := range rep.Errors {
		pre = append(pre, diagnose.Finding{Check: "config", Subject: *cfgPath, Verdict: diagnose.Fail, Evidence: e.Error(),
			Fix: "edgeproxy check -config " + *cfgPath + " lists what to correct"})
	}

	env := &diagnose.Env{Config: rep.Config, Resolver: *resolver, Timeout: *timeout}
	for _, n := range strings.Split(*names, ",") {
		if n = strings.TrimSpace(n); n != "" {
			env.Names = append(env.Names, strings.ToLower(n))
		}
	}
	if *bundle != "" {
		pool, err := readCABundle(*bundle)
		if err != nil {
			return err
		}
		env.Roots, env.RootsName = pool, "the CA bundle "+*bundle
	}
	if *user != "" {
		domain, name, ok := strings.Cut(*user, `\`)
		if !ok {
			return fmt.Errorf("parse -user %q: %w", *user, errUserForm)
		}
		env.Credentials = &diagnose.Credentials{Domain: domain, User: name, Password: os.Getenv(diagnosePasswordEnv)}
	}
	if *nsName != "" {
		run, release, err := diagnose.NamedNS(*nsName)
		if err != nil {
			return err
		}
		defer release()
		env.NS = run
	}

	if *clientNS != "" {
		run, release, err := diagnose.NamedNS(*clientNS)
		if err != nil {
			return err
		}
		defer release()
		env.ClientDial = dialIn(run)
	}

	found, err := diagnose.Run(ctx, env, sel...)
	found = append(pre, found...)
	if *asJSON {
		if werr := diagnose.WriteJSON(os.Stdout, found); werr != nil {
			return werr
		}
	} else if werr := diagnose.WriteText(os.Stdout, found, *verbose); werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	if diagnose.Worst(found) == diagnose.Fail {
		return exitError{code: 1}
	}
	return nil
}

// readCABundle reads a PEM file of root certificates.
func readCABundle(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("read CA bundle %s: %w", path, errNoCerts)
	}
	return pool, nil
}

// dialIn dials from inside the network namespace run enters.
func dialIn(run func(func() error) error) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = run(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

var (
	errNoCerts  = errors.New("no PEM certificates in it")
	errUserForm = errors.New(`want DOMAIN\user`)
)

func checkList() string {
	var names []string
	for _, c := range diagnose.All() {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}
