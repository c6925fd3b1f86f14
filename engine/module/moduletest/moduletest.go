// Package moduletest helps test modules and the engine without a node.
package moduletest

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"sync/atomic"

	"nksrun/engine/module"
)

// LocalRunner runs commands with the local /bin/sh (ignoring Sudo), so the
// shell code modules and the engine send to nodes is tested against a real
// shell and file system. Calls counts the commands it ran.
type LocalRunner struct {
	Calls atomic.Int64
}

var _ module.Runner = (*LocalRunner)(nil)

func (l *LocalRunner) Run(ctx context.Context, command string, opts module.RunOpts) (module.RunResult, error) {
	l.Calls.Add(1)
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Stdin = opts.Stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := module.RunResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		res.ExitCode, err = ee.ExitCode(), nil
	}
	return res, err
}
