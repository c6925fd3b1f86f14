// Command testbed brings the nksrun testbed (a real kube-apiserver and N
// SSH worker nodes on loopback, see nksrun/testdata/testbed) up for people:
//
//	testbed up [-n 20] [-dir /tmp/nksrun-testbed]   # needs root; stays up in the background
//	testbed status [-dir /tmp/nksrun-testbed]
//	testbed down [-dir /tmp/nksrun-testbed]
//	testbed build-apiserver                          # build/cache the test kube-apiserver
//
// "up" starts a daemon that supervises the nodes (stand-in reboots) and the
// API server, writes DIR/state.json and prints how to use it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"nksrun/testdata/testbed"
)

const defaultDir = "/tmp/nksrun-testbed"

// State is what DIR/state.json holds while a testbed is up.
type State struct {
	PID          int         `json:"pid"`
	Dir          string      `json:"dir"`
	Kubeconfig   string      `json:"kubeconfig"`
	KeyPath      string      `json:"key"`
	KnownHosts   string      `json:"known_hosts"`
	APIServerURL string      `json:"apiserver"`
	StartTime    string      `json:"start_time"`
	Nodes        []StateNode `json:"nodes"`
}

// StateNode describes one node in State.
type StateNode struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	User    string `json:"user"`
	OSImage string `json:"os_image"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:], os.Stdout)
	case "down":
		err = down(os.Args[2:], os.Stdout)
	case "status":
		var f *flags
		if f, err = parse("status", os.Args[2:]); err == nil {
			var s *State
			if s, err = readState(f.dir); err == nil && alive(s.PID) {
				printState(os.Stdout, s)
			} else {
				err = fmt.Errorf("no testbed running in %s (%v)", f.dir, err)
			}
		}
	case "serve": // the daemon "up" starts
		err = serve(os.Args[2:])
	case "build-apiserver":
		var bin string
		if bin, err = testbed.APIServerBinary(context.Background()); err == nil {
			fmt.Println(bin)
		}
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbed:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: testbed up [-n N] [-dir DIR] [-reboot-delay D] | testbed status [-dir DIR] | testbed down [-dir DIR] | testbed build-apiserver")
	os.Exit(2)
}

type flags struct {
	n           int
	dir         string
	rebootDelay time.Duration
}

func parse(name string, args []string) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("testbed "+name, flag.ContinueOnError)
	fs.IntVar(&f.n, "n", 20, "number of nodes (CentOS 7, Rocky 8, Ubuntu 22.04 in turn)")
	fs.StringVar(&f.dir, "dir", defaultDir, "state directory (removed by down)")
	fs.DurationVar(&f.rebootDelay, "reboot-delay", time.Second, "how long a stand-in reboot keeps a node down")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	d, err := filepath.Abs(f.dir)
	f.dir = d
	return f, err
}

func readState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	var s State
	return &s, json.Unmarshal(b, &s)
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// up starts "testbed serve" as a daemon (own session, output in DIR/testbed.log)
// and waits for its state file.
func up(args []string, out io.Writer) error {
	f, err := parse("up", args)
	if err != nil {
		return err
	}
	if err := testbed.Requirements(); err != nil {
		return err
	}
	if s, err := readState(f.dir); err == nil && alive(s.PID) {
		return fmt.Errorf("a testbed is already up in %s (pid %d): run \"testbed down -dir %s\" first", f.dir, s.PID, f.dir)
	}
	if ents, err := os.ReadDir(f.dir); err == nil && len(ents) > 0 {
		if _, err := os.Stat(filepath.Join(f.dir, "testbed.log")); err != nil {
			return fmt.Errorf("%s exists and is not a testbed directory: choose another -dir", f.dir)
		}
		if err := os.RemoveAll(f.dir); err != nil { // left over from a crashed daemon
			return err
		}
	}
	// Build (or find) the API server first, with its progress on the terminal.
	if _, err := testbed.APIServerBinary(context.Background()); err != nil {
		return err
	}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(f.dir, "testbed.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "serve", "-n", fmt.Sprint(f.n), "-dir", f.dir, "-reboot-delay", f.rebootDelay.String())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(3 * time.Minute)
	for {
		if s, err := readState(f.dir); err == nil && s.PID == cmd.Process.Pid {
			printState(out, s)
			return nil
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			os.RemoveAll(f.dir)
			return fmt.Errorf("the testbed daemon exited (%v):\n%s", err, b)
		case <-deadline:
			cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("the testbed was not up after 3 minutes; see %s", logPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func printState(out io.Writer, s *State) {
	fmt.Fprintf(out, "nksrun testbed up: %d nodes and a kube-apiserver at %s (started in %s, daemon pid %d)\n\n", len(s.Nodes), s.APIServerURL, s.StartTime, s.PID)
	fmt.Fprintf(out, "  kubeconfig:  %s\n  ssh key:     %s\n  known_hosts: %s\n\n", s.Kubeconfig, s.KeyPath, s.KnownHosts)
	for i, n := range s.Nodes {
		if i == 6 && len(s.Nodes) > 7 {
			fmt.Fprintf(out, "  ... %d more (kubectl get nodes -o wide)\n", len(s.Nodes)-6)
			break
		}
		fmt.Fprintf(out, "  %-40s %-15s %-7s %s\n", n.Name, n.Address, n.User, n.OSImage)
	}
	n := s.Nodes[0]
	port := ""
	if n.Port != 22 {
		port = fmt.Sprintf(" -p %d", n.Port)
	}
	fmt.Fprintf(out, "\nTry:\n")
	fmt.Fprintf(out, "  nksrun plan --kubeconfig %s -i %s --known-hosts %s runbooks/logrotate.yaml\n", s.Kubeconfig, s.KeyPath, s.KnownHosts)
	fmt.Fprintf(out, "  ssh -i %s -o UserKnownHostsFile=%s%s %s@%s sudo -n sha256sum /etc/default/grub\n", s.KeyPath, s.KnownHosts, port, n.User, n.Address)
	fmt.Fprintf(out, "  KUBECONFIG=%s kubectl get nodes -o wide\n", s.Kubeconfig)
	fmt.Fprintf(out, "\nStop it with: make testbed-down   (or: testbed down -dir %s)\n", s.Dir)
}

// serve is the daemon: it runs the testbed until SIGTERM/SIGINT.
func serve(args []string) error {
	f, err := parse("serve", args)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	tb, err := testbed.Start(ctx, testbed.Options{N: f.n, Dir: f.dir, RebootDelay: f.rebootDelay,
		Logf: func(format string, a ...any) {
			fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", a...)
		}})
	cancel()
	if err != nil {
		return err
	}
	s := &State{PID: os.Getpid(), Dir: tb.Dir, Kubeconfig: tb.Kubeconfig, KeyPath: tb.KeyPath, KnownHosts: tb.KnownHosts,
		APIServerURL: tb.APIServerURL, StartTime: tb.StartTime.Round(time.Millisecond).String()}
	for _, n := range tb.Nodes {
		s.Nodes = append(s.Nodes, StateNode{n.Name, n.Address, n.Port, n.User, n.Spec.OSImage})
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	tmp := filepath.Join(tb.Dir, "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		tb.Close()
		return err
	}
	if err := os.Rename(tmp, filepath.Join(tb.Dir, "state.json")); err != nil {
		tb.Close()
		return err
	}
	for s := range sig {
		if s != syscall.SIGHUP {
			break
		}
	}
	return tb.Close()
}

// down stops the daemon, which removes everything.
func down(args []string, out io.Writer) error {
	f, err := parse("down", args)
	if err != nil {
		return err
	}
	s, err := readState(f.dir)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(f.dir); err == nil {
			return fmt.Errorf("%s exists but has no state.json: not a running testbed (remove it by hand if it is a leftover)", f.dir)
		}
		fmt.Fprintf(out, "no testbed in %s\n", f.dir)
		return nil
	}
	if err != nil {
		return err
	}
	if alive(s.PID) {
		syscall.Kill(s.PID, syscall.SIGTERM)
		deadline := time.Now().Add(60 * time.Second)
		for alive(s.PID) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(s.PID) {
			return fmt.Errorf("testbed daemon %d did not stop in 60s", s.PID)
		}
	}
	if _, err := os.Stat(filepath.Join(f.dir, "state.json")); err == nil {
		os.RemoveAll(f.dir) // the daemon died without cleaning up
	}
	fmt.Fprintf(out, "testbed in %s is down\n", f.dir)
	return nil
}
