// Command nksrun runs declarative runbooks for the NKS troubleshooting guide.
// It only wires signals and the process exit code; everything else is in
// cmd/nksrun/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"nksrun/cmd/nksrun/cli"
)

func main() {
	// Ctrl-C / SIGTERM cancel the run cleanly: in-flight commands are
	// stopped, nothing half-applied is left (installs are atomic).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
