// Command nksrun-prof is nksrun (the same cmd/nksrun/cli.Run) with profiling, for
// finding where a slow run spends its time:
//
//	BENCH_CPUPROFILE=cpu.out BENCH_TRACE=trace.out BENCH_MEMPROFILE=mem.out \
//	  nksrun-prof plan ... ; go tool pprof -top nksrun-prof cpu.out
//
// Use it with the bench driver: go run ./testdata/bench/driver -nksrun $(go build -o /tmp/p ./testdata/bench/nksrun-prof && echo /tmp/p)
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"syscall"

	"nksrun/cmd/nksrun/cli"
)

func main() { os.Exit(run()) }

func run() int {
	if p := os.Getenv("BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	if p := os.Getenv("BENCH_TRACE"); p != "" {
		f, err := os.Create(p)
		if err == nil {
			trace.Start(f)
			defer func() { trace.Stop(); f.Close() }()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if p := os.Getenv("BENCH_MEMPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			runtime.GC()
			pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
	}
	return code
}
