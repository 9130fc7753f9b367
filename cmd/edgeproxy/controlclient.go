package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/control"
)

// controlClient is the flags and the call every command that asks the
// running daemon over its control socket shares.
type controlClient struct {
	cfgPath, socket *string
	timeout         *time.Duration
}

// controlFlags adds -config, -socket and -timeout to fs.
func controlFlags(fs *flag.FlagSet, timeout time.Duration) *controlClient {
	return &controlClient{
		cfgPath: fs.String("config", "/etc/edgeproxy/edgeproxy.yaml", "configuration `file`: its control.socket locates the daemon"),
		socket:  fs.String("socket", "", "the daemon's control socket (default: the file's control.socket)"),
		timeout: fs.Duration("timeout", timeout, "give up after this long"),
	}
}

// call sends cmd with args to the daemon and decodes its answer into res.
func (c *controlClient) call(ctx context.Context, cmd string, args, res any) error {
	path, err := controlSocket(*c.socket, *c.cfgPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *c.timeout)
	defer cancel()
	_, err = control.Call(ctx, path, cmd, args, res)
	return err
}

// controlSocket is the socket named by -socket, else by the file.
func controlSocket(socket, cfgPath string) (string, error) {
	if socket != "" {
		return socket, nil
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return "", fmt.Errorf("%w\n(-socket PATH finds the daemon without the file)", err)
	}
	return cfg.Control.Socket, nil
}
