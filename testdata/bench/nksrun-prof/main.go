// Command nksrun-prof is nksrun (the same cmd/nksrun/cli.Run) with profiling, for
// finding where a slow run spends its time:
//
//	BENCH_CPUPROFILE=cpu.out BENCH_TRACE=trace.out BENCH_MEMPROFILE=mem.out \
//	  nksrun-prof plan ... ; go tool pprof -top nksrun-prof cpu.out
//
// BENCH_PEAKHEAP=heap.out writes the in-use heap profile taken at the run's
// largest live heap (sampled every 20 ms), which is what peak RSS follows:
//
//	go tool pprof -sample_index=inuse_space -top nksrun-prof heap.out
//
// Use it with the bench driver: go run ./testdata/bench/driver -nksrun $(go build -o /tmp/p ./testdata/bench/nksrun-prof && echo /tmp/p)
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

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
	if p := os.Getenv("BENCH_PEAKHEAP"); p != "" {
		done := watchPeakHeap(p)
		defer done()
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

// watchPeakHeap samples the live heap and, each time it reaches a new
// maximum (by more than 1 MiB), rewrites the heap profile at path.
func watchPeakHeap(path string) (done func()) {
	stop := make(chan struct{})
	finished := make(chan struct{})
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"}, {Name: "/gc/heap/goal:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"}, {Name: "/memory/classes/heap/released:bytes"},
		{Name: "/sched/goroutines:goroutines"}}
	var total uint64
	go func() {
		defer close(finished)
		var peak uint64
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			metrics.Read(sample)
			if t := sample[1].Value.Uint64(); t > total {
				total = t
				var b strings.Builder
				for _, m := range sample {
					fmt.Fprintf(&b, "%s %d\n", m.Name, m.Value.Uint64())
				}
				os.WriteFile(path+".metrics", []byte(b.String()), 0o644)
				if f, err := os.Create(path + ".goroutines"); err == nil {
					pprof.Lookup("goroutine").WriteTo(f, 1)
					f.Close()
				}
			}
			if live := sample[0].Value.Uint64(); live > peak+1<<20 {
				peak = live
				if f, err := os.Create(path); err == nil {
					pprof.Lookup("heap").WriteTo(f, 0)
					f.Close()
				}
			}
		}
	}()
	return func() { close(stop); <-finished }
}
