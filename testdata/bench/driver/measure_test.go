package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// measureNodes runs its processes through this binary (see spawnArg).
	if len(os.Args) > 2 && os.Args[1] == spawnArg {
		os.Exit(spawn(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestPeakRSSIsTheChildsOwn: with 256 MB touched in this process, a child
// that needs a few MB is measured at a few MB, not at this process's size
// (what wait4 of a child Go starts itself reports, shown in the log).
func TestPeakRSSIsTheChildsOwn(t *testing.T) {
	ballast := make([]byte, 256<<20)
	for i := range ballast {
		if i%4096 == 0 {
			ballast[i] = 1
		}
	}
	s, err := measureNodes(nil, "/bin/sh", []string{"-c", "exit 3"})
	if err != nil {
		t.Fatal(err)
	}
	if s.exit != 3 {
		t.Errorf("exit %d, want 3 (the child's)", s.exit)
	}
	if s.rssMB <= 0 || s.rssMB > 64 {
		t.Errorf("sh measured at %.0f MB peak RSS with a 256 MB parent, want its own few MB", s.rssMB)
	}
	direct := exec.Command("/bin/sh", "-c", "exit 0")
	if err := direct.Run(); err == nil {
		t.Logf("the same sh started directly: ru_maxrss %d MB (the parent's memory folded in at exec), through the spawner: %.1f MB",
			direct.ProcessState.SysUsage().(*syscall.Rusage).Maxrss/1024, s.rssMB)
	}
	ballast[1] = 2 // keep it alive until here
}

func TestPhases(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) string {
		return t0.Add(time.Duration(s * float64(time.Second))).Format(time.RFC3339Nano)
	}
	line := func(s float64, typ, phase string) string {
		return fmt.Sprintf(`{"time":%q,"type":%q,"phase":%q}`+"\n", at(s), typ, phase)
	}
	for _, tc := range []struct {
		name string
		log  string
		want map[string]float64
	}{
		{"plan", line(0.1, "phase_start", "plan") + line(2, "host_result", "plan"), map[string]float64{"startup": 0.1, "plan": 1.9, "tail": 1}},
		{"plan, confirm, apply", line(0.1, "phase_start", "plan") + line(1, "host_result", "plan") + line(1.5, "phase_start", "apply") + line(2.5, "host_result", "apply"),
			map[string]float64{"startup": 0.1, "plan": 0.9, "render+confirm": 0.5, "apply+verify": 1, "tail": 0.5}},
		{"node by node", line(0.1, "phase_start", "plan") + line(0.1, "phase_start", "apply") + line(1, "host_result", "plan") + line(1.2, "host_result", "apply") + line(2, "host_result", "plan") + line(2.5, "host_result", "apply"),
			map[string]float64{"startup": 0.1, "plan+apply (node by node)": 2.4, "tail": 0.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := phases([]byte(tc.log), t0, t0.Add(3*time.Second))
			if len(got) != len(tc.want) {
				t.Fatalf("phases %v, want %v", got, tc.want)
			}
			for k, w := range tc.want {
				if d, ok := got[k]; !ok || d.Round(time.Millisecond) != time.Duration(w*float64(time.Second)).Round(time.Millisecond) {
					t.Errorf("%s: %v, want %.1fs (all: %v)", k, d, w, got)
				}
			}
		})
	}
}
