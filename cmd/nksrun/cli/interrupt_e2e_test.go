package cli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"nksrun/cmd/nksrun/cli"
	"nksrun/testdata/testbed"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestE2ESecondInterruptStatusUnlock: Ctrl-C twice during a rolling reboot
// exits at once and says what is left; `nksrun status` shows it and
// `nksrun unlock` clears it.
func TestE2ESecondInterruptStatusUnlock(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("end-to-end")
	}
	old := testbed.NodeSpec{OSImage: "CentOS Linux 7 (Core)", Kernel: "3.10.0-1160.el7.x86_64", Runtime: "docker://20.10.7", GrubCmdline: "crashkernel=auto rhgb quiet"}
	tb := testbed.New(t, testbed.Options{Nodes: []testbed.NodeSpec{old, old}, RebootDelay: 20 * time.Second})
	rb, err := filepath.Abs("../../../runbooks/cgroup-nokmem.yaml")
	if err != nil {
		t.Fatal(err)
	}
	conn := []string{"--kubeconfig", tb.Kubeconfig, "-i", tb.KeyPath, "--known-hosts", tb.KnownHosts}
	p := start(t, append(append([]string{"apply", "--auto-approve", "--set", "preventive=true", "--lock-file", filepath.Join(t.TempDir(), "lock")}, conn...), rb)...)

	// Wait until a node is down in its reboot (NotReady).
	ctx := context.Background()
	deadline := time.Now().Add(2 * time.Minute)
	for down := false; !down; {
		if time.Now().After(deadline) {
			t.Fatal("no node went down for its reboot within 2 minutes")
		}
		select {
		case <-p.done:
			t.Fatalf("apply ended before any reboot: exit %d\n%s", p.code, p.stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
		for _, n := range tb.Nodes {
			if ready, err := n.Ready(ctx); err == nil && !ready {
				down = true
			}
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("a second interrupt did not end the run at once")
	}
	stderr := p.stderr.String()
	if p.code != 130 || !strings.Contains(stderr, "interrupted again: exiting now") {
		t.Fatalf("second interrupt: exit %d, want 130 with a message\n%s", p.code, stderr)
	}
	// It says what it left: the slot held by this run and the cordoned node.
	if !strings.Contains(stderr, "REBOOT SLOT") && !strings.Contains(stderr, "CORDONED BY NKSRUN") && !strings.Contains(stderr, "REBOOTED, NOT BACK") {
		t.Errorf("the exit does not say what was left:\n%s", stderr)
	}

	type state struct {
		Slots     []json.RawMessage
		Cordoned  []json.RawMessage
		Rebooting []json.RawMessage
	}
	status := func() state {
		t.Helper()
		code, out, _ := nksrun(t, "status", "--format", "json", "--kubeconfig", tb.Kubeconfig)
		if code != 0 {
			t.Fatalf("status: exit %d", code)
		}
		var st state
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status --format json: %v\n%s", err, out)
		}
		return st
	}
	if st := status(); len(st.Slots) == 0 && len(st.Cordoned) == 0 {
		t.Errorf("status shows neither a slot nor a cordon after the hard exit: %+v", st)
	}
	// plan shows it as pending work (planned on a node that is up).
	checked := false
	for _, n := range tb.Nodes {
		if ready, err := n.Ready(ctx); err != nil || !ready {
			continue
		}
		_, out, _ := nksrun(t, append(append([]string{"plan", "--set", "preventive=true", "--limit", n.Name}, conn...), rb)...)
		if !strings.Contains(out, "Left by earlier runs") || !strings.Contains(out, "reboot slot") {
			t.Errorf("plan does not show what the interrupted run left:\n%s", out)
		}
		checked = true
		break
	}
	if !checked {
		t.Error("no node was up to plan on")
	}
	if code, _, stderr := nksrun(t, "unlock", "--kubeconfig", tb.Kubeconfig); code != cli.ExitError || !strings.Contains(stderr, "auto-approve") {
		t.Errorf("unlock without a terminal or --auto-approve: exit %d %s", code, stderr)
	}
	if code, out, stderr := nksrun(t, "unlock", "--auto-approve", "--force", "--kubeconfig", tb.Kubeconfig); code != 0 {
		t.Fatalf("unlock --force: exit %d\n%s%s", code, out, stderr)
	}
	if st := status(); len(st.Slots) != 0 || len(st.Cordoned) != 0 {
		t.Errorf("after unlock: %+v", st)
	}
	for _, n := range tb.Nodes {
		obj, err := tb.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if obj.Spec.Unschedulable {
			t.Errorf("%s is still cordoned after unlock", n.Name)
		}
	}
}
