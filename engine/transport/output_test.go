package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nksrun/engine/module"
)

func TestPgidFilter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		pgid   int // 0: none reported
		out    string
	}{
		{"marker then output", []string{"nksrun-pgid:1234\nerr\n"}, 1234, "err\n"},
		{"marker split over writes", []string{"nksr", "un-pgid:12", "34\n", "tail"}, 1234, "tail"},
		{"marker only", []string{"nksrun-pgid:77\n"}, 77, ""},
		{"no marker (sudo refused first)", []string{"sudo: a password is required\n"}, 0, "sudo: a password is required\n"},
		{"looks like it, is not", []string{"nksrun-pgid:12x\nrest"}, 0, "nksrun-pgid:12x\nrest"},
		{"group 1 is never trusted", []string{"nksrun-pgid:1\n"}, 0, "nksrun-pgid:1\n"},
		{"marker later is output", []string{"first\nnksrun-pgid:99\n"}, 0, "first\nnksrun-pgid:99\n"},
		{"short head without newline", []string{"nk"}, 0, "nk"},
		{"long head without newline", []string{strings.Repeat("x", 100)}, 0, strings.Repeat("x", 100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := &cappedBuffer{c: newOutputCap(1 << 20)}
			f := newPgidFilter(buf)
			for _, c := range tc.chunks {
				if n, err := f.Write([]byte(c)); err != nil || n != len(c) {
					t.Fatalf("Write(%q) = %d, %v", c, n, err)
				}
			}
			f.flush()
			got := 0
			select {
			case got = <-f.pgid:
			default:
			}
			select {
			case <-f.none:
				if tc.pgid != 0 {
					t.Error("none closed although the group was reported")
				}
			default:
				if tc.pgid == 0 && len(tc.out) > 2 {
					t.Error("none not closed although stderr began with something else")
				}
			}
			if got != tc.pgid || string(buf.bytes()) != tc.out {
				t.Fatalf("pgid %d output %q, want %d %q", got, buf.bytes(), tc.pgid, tc.out)
			}
		})
	}
}

func TestCappedBuffer(t *testing.T) {
	c := newOutputCap(10)
	out, errb := &cappedBuffer{c: c}, &cappedBuffer{c: c}
	if n, err := out.Write([]byte("12345")); n != 5 || err != nil {
		t.Fatalf("%d %v", n, err)
	}
	if n, err := errb.Write([]byte("abcde")); n != 5 || err != nil {
		t.Fatalf("exactly at the limit is allowed: %d %v", n, err)
	}
	select {
	case <-c.over:
		t.Fatal("over at exactly the limit")
	default:
	}
	if n, err := out.Write([]byte("6")); n != 0 || !errors.Is(err, errOutputLimit) {
		t.Fatalf("one byte over: %d %v", n, err)
	}
	<-c.over // closed
	if n, err := errb.Write([]byte("f")); n != 0 || err == nil {
		t.Fatalf("after the limit: %d %v", n, err)
	}
	if string(out.bytes()) != "12345" || string(errb.bytes()) != "abcde" {
		t.Fatalf("kept %q %q", out.bytes(), errb.bytes())
	}
	// A write that straddles the limit keeps its head.
	c2 := newOutputCap(4)
	b := &cappedBuffer{c: c2}
	if n, err := b.Write([]byte("abcdef")); n != 4 || err == nil || string(b.bytes()) != "abcd" {
		t.Fatalf("%d %v %q", n, err, b.bytes())
	}
}

// TestCappedBufferChunks: whatever the sizes of the writes, the bytes come
// back in order and complete.
func TestCappedBufferChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sizes := range [][]int{{1}, {0, 5}, {511, 1, 512}, {chunkSize}, {chunkSize + 1}, {3 * chunkSize, 7}, nil} {
		if sizes == nil { // many random ones
			for range 200 {
				sizes = append(sizes, rng.IntN(3*chunkSize/2))
			}
		}
		b := &cappedBuffer{c: newOutputCap(1 << 30)}
		var want []byte
		for _, n := range sizes {
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			want = append(want, p...)
			if k, err := b.Write(p); k != n || err != nil {
				t.Fatalf("Write(%d) = %d, %v", n, k, err)
			}
		}
		if got := b.final(); !bytes.Equal(got, want) {
			t.Fatalf("sizes %v: got %d bytes, want %d (equal prefix: %v)", sizes[:min(len(sizes), 5)], len(got), len(want), bytes.HasPrefix(want, got))
		}
		for _, c := range b.chunks {
			if cap(c) > chunkSize {
				t.Fatalf("a chunk of %d bytes", cap(c))
			}
		}
	}
}

func TestRunOutputLimit(t *testing.T) {
	e, c := connectedEnv(t, "")
	e.srv.keepOrphans = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, tc := range []struct {
		name    string
		command string
		limit   int64
		wantErr bool
	}{
		{"exactly at the limit", "head -c 600000 /dev/zero; head -c 448576 /dev/zero >&2", 1 << 20, false},
		{"one byte over", "head -c 600000 /dev/zero; head -c 448577 /dev/zero >&2", 1 << 20, true},
		{"endless output is ended", "yes", 1 << 20, true},
		{"endless stderr is ended", "yes >&2", 64 << 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := c.Run(ctx, tc.command, module.RunOpts{MaxOutput: tc.limit})
			if !tc.wantErr {
				if err != nil || int64(len(res.Stdout)+len(res.Stderr)) != tc.limit {
					t.Fatalf("err %v, %d+%d bytes", err, len(res.Stdout), len(res.Stderr))
				}
				return
			}
			var le *module.OutputLimitError
			if !errors.Is(err, module.ErrOutputLimit) || !errors.As(err, &le) || le.Limit != tc.limit {
				t.Fatalf("err = %v", err)
			}
			mustContain(t, err.Error(), "node n1 (", module.FormatBytes(tc.limit), "--max-output")
			if n := int64(len(res.Stdout) + len(res.Stderr)); n > tc.limit {
				t.Fatalf("kept %d bytes over a limit of %d", n, tc.limit)
			}
		})
	}
	// The connection is still usable, with the default limit.
	if res, err := c.Run(ctx, "echo ok", module.RunOpts{}); err != nil || string(res.Stdout) != "ok\n" {
		t.Fatalf("%+v %v", res, err)
	}
}

// TestStopEndsRemoteGroup: on a server that, like sshd with sudo, leaves a
// command running when its channel closes, a timeout, a cancel and an
// output over the limit each end the command's whole process group.
func TestStopEndsRemoteGroup(t *testing.T) {
	e, c := connectedEnv(t, "")
	e.srv.keepOrphans = true
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, tc := range []struct {
		name  string
		run   func(cmd string) error
		extra string // runs after the pids are recorded
		want  error
	}{
		{"timeout", func(cmd string) error {
			_, err := c.Run(ctx, cmd, module.RunOpts{Timeout: 300 * time.Millisecond, Sudo: true})
			return err
		}, "", ErrCommandTimeout},
		{"cancel", func(cmd string) error {
			rctx, rcancel := context.WithCancel(ctx)
			time.AfterFunc(300*time.Millisecond, rcancel)
			_, err := c.Run(rctx, cmd, module.RunOpts{})
			return err
		}, "", context.Canceled},
		{"output-limit", func(cmd string) error {
			_, err := c.Run(ctx, cmd, module.RunOpts{MaxOutput: 65536})
			return err
		}, "head -c 70000 /dev/zero;", module.ErrOutputLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pids := filepath.Join(dir, tc.name+".pids")
			marker := filepath.Join(dir, tc.name+".marker")
			// The sleep runs in the background so its pid can be recorded;
			// it is in the command's process group like any child.
			cmd := fmt.Sprintf("sleep 30 & echo $$ $! > %s; %s wait; touch %s", pids, tc.extra, marker)
			if err := tc.run(cmd); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			b, err := os.ReadFile(pids)
			if err != nil {
				t.Fatal(err)
			}
			for _, pid := range strings.Fields(string(b)) {
				waitGone(t, pid)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("the command went on after it was stopped")
			}
		})
	}
}

// waitGone waits (bounded) until process pid is gone or a zombie.
func waitGone(t *testing.T, pid string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return
		}
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %s still runs: %s", pid, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
