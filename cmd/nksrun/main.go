// Command nksrun runs declarative runbooks for the NKS troubleshooting guide.
// It only wires signals and the process exit code; everything else is in
// cmd/nksrun/cli.
package main

import (
	"context"
	"os"

	"nksrun/cmd/nksrun/cli"
)

func main() {
	// Ctrl-C / SIGTERM cancel the run cleanly: in-flight commands are
	// stopped, nothing half-applied is left (installs are atomic), a node
	// mid-reboot is seen through; a second one exits at once.
	ctx, stop := cli.HandleInterrupts(context.Background(), os.Stderr)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
