package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"nksrun/testdata/testbed"
)

// mixed is a small NKS-like cluster: CentOS 7 + docker, Rocky 8 + containerd,
// Ubuntu 22.04 + containerd.
var mixed = []testbed.NodeSpec{
	{OSImage: "CentOS Linux 7 (Core)", Kernel: "3.10.0-1160.el7.x86_64", Runtime: "docker://20.10.7", Kubelet: "v1.23.3",
		Images: []string{"nginx:1.25", "registry.k8s.io/pause:3.9"}, Labels: map[string]string{"tier": "old"}},
	{OSImage: "Rocky Linux 8.10 (Green Obsidian)", NodeGroup: "gpu-worker", Unschedulable: true,
		Files: map[string]string{"/etc/logrotate.d/custom": "/var/log/custom.log { daily\n missingok\n}\n", "/etc/docker/daemon.json": "{}\n"}},
	{OSImage: "Ubuntu 22.04.4 LTS", NotReady: true, GrubCmdline: "console=ttyS0 mitigations=off"},
}

// ssh runs the real OpenSSH client the way a person would.
func ssh(t *testing.T, tb *testbed.Testbed, n *testbed.Node, timeout time.Duration, command string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-i", tb.KeyPath, "-o", "UserKnownHostsFile="+tb.KnownHosts,
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-p", strconv.Itoa(n.Port),
		n.User+"@"+n.Address, command)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), err
}

func mustSSH(t *testing.T, tb *testbed.Testbed, n *testbed.Node, command string) string {
	t.Helper()
	o, e, err := ssh(t, tb, n, 30*time.Second, command)
	if err != nil {
		t.Fatalf("node %s: ssh %q: %v\nstdout: %s\nstderr: %s", n.Name, command, err, o, e)
	}
	return o
}

func TestTestbed(t *testing.T) {
	tb := testbed.New(t, testbed.Options{Nodes: mixed, RebootDelay: 500 * time.Millisecond})
	ctx := context.Background()
	c7, r8, u22 := tb.Nodes[0], tb.Nodes[1], tb.Nodes[2]
	t.Logf("started in %s", tb.StartTime)

	t.Run("InternalIPs", func(t *testing.T) {
		// What kubectl get nodes -o jsonpath='{.items[*].status.addresses[?(@.type=="InternalIP")].address}' prints.
		list, err := tb.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got, want []string
		for _, o := range list.Items {
			for _, a := range o.Status.Addresses {
				if a.Type == "InternalIP" {
					got = append(got, a.Address)
				}
			}
		}
		for _, n := range tb.Nodes {
			want = append(want, n.Address)
		}
		sort.Strings(got)
		sort.Strings(want)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("InternalIPs %v, want %v", got, want)
		}
		o, err := tb.Client.CoreV1().Nodes().Get(ctx, c7.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ni := o.Status.NodeInfo
		if ni.OSImage != "CentOS Linux 7 (Core)" || ni.KernelVersion != "3.10.0-1160.el7.x86_64" || ni.ContainerRuntimeVersion != "docker://20.10.7" || ni.KubeletVersion != "v1.23.3" {
			t.Errorf("nodeInfo %+v", ni)
		}
		if o.Labels["magnum.openstack.org/role"] != "worker" || o.Labels["magnum.openstack.org/nodegroup"] != "default-worker" || o.Labels["tier"] != "old" {
			t.Errorf("labels %v", o.Labels)
		}
		o, _ = tb.Client.CoreV1().Nodes().Get(ctx, r8.Name, metav1.GetOptions{})
		if !o.Spec.Unschedulable || o.Labels["magnum.openstack.org/nodegroup"] != "gpu-worker" {
			t.Errorf("rocky node: unschedulable %v labels %v", o.Spec.Unschedulable, o.Labels)
		}
		if ready, _ := u22.Ready(ctx); ready {
			t.Errorf("ubuntu node should start NotReady")
		}
		if ready, _ := c7.Ready(ctx); !ready {
			t.Errorf("centos node should be Ready")
		}
		if _, err := os.Stat(tb.Kubeconfig); err != nil {
			t.Error(err)
		}
	})

	t.Run("SSHSudoSha256", func(t *testing.T) {
		for _, n := range tb.Nodes {
			b, err := os.ReadFile(n.Path("/etc/default/grub"))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(b)
			out := mustSSH(t, tb, n, "id -un; hostname; sudo -n sha256sum /etc/default/grub")
			want := n.User + "\n" + n.Name + "\n" + hex.EncodeToString(sum[:]) + "  /etc/default/grub\n"
			if out != want {
				t.Errorf("node %s: got %q, want %q", n.Name, out, want)
			}
		}
		if got := mustSSH(t, tb, r8, "cat /etc/logrotate.d/custom /etc/docker/daemon.json"); got != "/var/log/custom.log { daily\n missingok\n}\n{}\n" {
			t.Errorf("Files: %q", got)
		}
		if got := mustSSH(t, tb, u22, ". /etc/os-release; echo $ID $VERSION_ID"); got != "ubuntu 22.04\n" {
			t.Errorf("os-release: %q", got)
		}
		// scp (SFTP subsystem) works through the session wrapper.
		local := filepath.Join(t.TempDir(), "f")
		os.WriteFile(local, []byte("via scp\n"), 0o644)
		cmd := exec.Command("scp", "-i", tb.KeyPath, "-o", "UserKnownHostsFile="+tb.KnownHosts, "-o", "BatchMode=yes",
			"-P", strconv.Itoa(c7.Port), local, c7.User+"@"+c7.Address+":/tmp/f")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("scp: %v: %s", err, out)
		}
		if b, _ := os.ReadFile(c7.Path("/tmp/f")); string(b) != "via scp\n" {
			t.Errorf("scp'd file on the node: %q", b)
		}
	})

	t.Run("Isolation", func(t *testing.T) {
		mustSSH(t, tb, c7, "echo one | sudo -n tee /etc/logrotate.d/isolation >/dev/null; echo t > /tmp/isolation")
		if b, err := os.ReadFile(c7.Path("/etc/logrotate.d/isolation")); err != nil || string(b) != "one\n" {
			t.Fatalf("node 1 file through Path: %q %v", b, err)
		}
		for _, p := range []string{"/etc/logrotate.d/isolation", "/tmp/isolation"} {
			if o, _, err := ssh(t, tb, r8, 10*time.Second, "test -e "+p+" && echo present || echo absent"); err != nil || o != "absent\n" {
				t.Errorf("%s on node 2: %q %v", p, o, err)
			}
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s leaked to the host", p)
			}
		}
		if mustSSH(t, tb, c7, "cat /proc/sys/kernel/random/boot_id") == mustSSH(t, tb, r8, "cat /proc/sys/kernel/random/boot_id") {
			t.Error("two nodes share a boot_id")
		}
		// logrotate is real and reads the node's own config.
		mustSSH(t, tb, r8, "sudo -n logrotate -d /etc/logrotate.d/custom")
	})

	t.Run("Systemctl", func(t *testing.T) {
		if got := mustSSH(t, tb, c7, "systemctl is-active rpc-statd rpcbind.service docker"); got != "active\nactive\nactive\n" {
			t.Errorf("is-active: %q", got)
		}
		if o, _, err := ssh(t, tb, c7, 10*time.Second, "systemctl is-active nosuch"); exitCode(err) != 3 || o != "inactive\n" {
			t.Errorf("unknown unit: %q %v", o, err)
		}
		if _, e, err := ssh(t, tb, c7, 10*time.Second, "systemctl restart rpcbind"); err == nil || !strings.Contains(e, "Interactive authentication required") {
			t.Errorf("restart as non-root should fail: %q %v", e, err)
		}
		mustSSH(t, tb, c7, "sudo -n systemctl stop rpcbind")
		if c7.UnitActive("rpcbind") {
			t.Error("stop did not stop")
		}
		mustSSH(t, tb, c7, "sudo -n systemctl restart rpcbind")
		if !c7.UnitActive("rpcbind") {
			t.Error("restart did not start")
		}
		c7.SetUnit("rpc-statd", false)
		if o, _, err := ssh(t, tb, c7, 10*time.Second, "systemctl is-active rpc-statd"); exitCode(err) != 3 || o != "inactive\n" {
			t.Errorf("SetUnit false: %q %v", o, err)
		}
		c7.SetUnitRestartFails("rpc-statd", true)
		_, e, err := ssh(t, tb, c7, 10*time.Second, "sudo -n systemctl restart rpc-statd")
		if exitCode(err) != 1 || !strings.Contains(e, "Job for rpc-statd.service failed") || c7.UnitState("rpc-statd") != "failed" {
			t.Errorf("restart-fails knob: %q %v state %q", e, err, c7.UnitState("rpc-statd"))
		}
		c7.SetUnitRestartFails("rpc-statd", false)
		mustSSH(t, tb, c7, "sudo -n systemctl restart rpc-statd.service")
		if !c7.UnitActive("rpc-statd") {
			t.Error("rpc-statd not active after restart")
		}
	})

	t.Run("Images", func(t *testing.T) {
		got := mustSSH(t, tb, c7, "sudo -n docker images --format '{{.Repository}}:{{.Tag}}'")
		if got != "nginx:1.25\nregistry.k8s.io/pause:3.9\n" {
			t.Errorf("docker images --format: %q", got)
		}
		got = mustSSH(t, tb, c7, "sudo -n crictl images")
		lines := strings.Split(strings.TrimSpace(got), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "IMAGE") || !strings.HasPrefix(lines[1], "docker.io/library/nginx ") || !strings.Contains(lines[1], " 1.25 ") {
			t.Errorf("crictl images:\n%s", got)
		}
		if _, _, err := ssh(t, tb, r8, 10*time.Second, "command -v docker"); err == nil {
			t.Error("a containerd node has docker")
		}
		if _, e, err := ssh(t, tb, r8, 10*time.Second, "crictl images"); err == nil || !strings.Contains(e, "permission denied") {
			t.Errorf("crictl as non-root: %q %v", e, err)
		}
		mustSSH(t, tb, c7, "sudo -n crictl rmi nginx:1.25")
		if got := c7.Images(); len(got) != 1 || got[0] != "registry.k8s.io/pause:3.9" {
			t.Errorf("after rmi: %v", got)
		}
	})

	t.Run("GrubAndReboot", func(t *testing.T) {
		// Regenerating with an unchanged /etc/default/grub gives the same grub.cfg.
		before, _ := os.ReadFile(u22.Path(u22.GrubCfg))
		mustSSH(t, tb, u22, "sudo -n update-grub")
		after, _ := os.ReadFile(u22.Path(u22.GrubCfg))
		if !bytes.Equal(before, after) || !strings.Contains(string(after), "ro console=ttyS0 mitigations=off quiet splash") {
			t.Errorf("update-grub changed or lost the cmdline:\n%s\n---\n%s", before, after)
		}
		if !strings.Contains(u22.Cmdline(), "ro console=ttyS0 mitigations=off quiet splash") {
			t.Errorf("initial cmdline %q", u22.Cmdline())
		}
		// The knob: regeneration fails and leaves grub.cfg.new.
		c7.SetGrubBroken(true)
		_, e, err := ssh(t, tb, c7, 10*time.Second, "sudo -n grub2-mkconfig -o /boot/grub2/grub.cfg")
		if err == nil || !strings.Contains(e, "Syntax errors") {
			t.Errorf("broken grub: %q %v", e, err)
		}
		if _, err := os.Stat(c7.Path("/boot/grub2/grub.cfg.new")); err != nil {
			t.Errorf("grub.cfg.new not left behind: %v", err)
		}
		c7.SetGrubBroken(false)
		os.Remove(c7.Path("/boot/grub2/grub.cfg.new"))

		// Change the kernel args, regenerate, reboot: new boot id, new cmdline, Ready flips.
		mustSSH(t, tb, c7, `sudo -n sed -i 's/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX="crashkernel=auto rhgb quiet nfs.enable_ino64=0"/' /etc/default/grub && sudo -n grub2-mkconfig -o /boot/grub2/grub.cfg`)
		if strings.Contains(c7.Cmdline(), "ino64") {
			t.Fatal("cmdline changed before the reboot")
		}
		boot := c7.BootID()
		var sawNotReady sync.WaitGroup
		sawNotReady.Add(1)
		stop := make(chan struct{})
		notReady := false
		go func() {
			defer sawNotReady.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if r, err := c7.Ready(ctx); err == nil && !r {
					notReady = true
				}
			}
		}()
		_, _, err = ssh(t, tb, c7, 10*time.Second, "sudo -n reboot")
		t.Logf("ssh sudo reboot: %v (a dropped connection is normal)", err)
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := c7.WaitReboots(wctx, 1); err != nil {
			t.Fatal(err)
		}
		close(stop)
		sawNotReady.Wait()
		if !notReady {
			t.Error("Node never went NotReady during the reboot")
		}
		if r, _ := c7.Ready(ctx); !r {
			t.Error("Node not Ready after the reboot")
		}
		if c7.BootID() == boot || c7.BootID() == "" {
			t.Errorf("boot id %q -> %q", boot, c7.BootID())
		}
		if got := mustSSH(t, tb, c7, "cat /proc/cmdline"); !strings.HasSuffix(got, "ro crashkernel=auto rhgb quiet nfs.enable_ino64=0\n") || !strings.HasPrefix(got, "BOOT_IMAGE=/vmlinuz-3.10.0-1160.el7.x86_64 root=UUID=") {
			t.Errorf("cmdline after reboot: %q", got)
		}
		if got := strings.TrimSpace(mustSSH(t, tb, c7, "cat /proc/sys/kernel/random/boot_id")); got != c7.BootID() {
			t.Errorf("node sees boot id %q, testbed %q", got, c7.BootID())
		}
		o, _ := tb.Client.CoreV1().Nodes().Get(ctx, c7.Name, metav1.GetOptions{})
		if o.Status.NodeInfo.BootID != c7.BootID() {
			t.Errorf("nodeInfo.bootID %q, want %q", o.Status.NodeInfo.BootID, c7.BootID())
		}
		// State survives the reboot.
		if b, _ := os.ReadFile(c7.Path("/etc/logrotate.d/isolation")); string(b) != "one\n" {
			t.Errorf("file lost in reboot: %q", b)
		}
	})

	t.Run("RebootBroken", func(t *testing.T) {
		r8.SetRebootBroken(true)
		boot := r8.BootID()
		ssh(t, tb, r8, 10*time.Second, "sudo -n systemctl reboot")
		time.Sleep(1500 * time.Millisecond) // > RebootDelay
		if r8.Up() || r8.Reboots() != 0 {
			t.Fatalf("a broken reboot came back (up %v, reboots %d)", r8.Up(), r8.Reboots())
		}
		if _, err := net.DialTimeout("tcp", net.JoinHostPort(r8.Address, strconv.Itoa(r8.Port)), time.Second); err == nil {
			t.Error("something listens on a node whose reboot is broken")
		}
		if r, _ := r8.Ready(ctx); r {
			t.Error("Node Ready while down")
		}
		r8.SetRebootBroken(false)
		if err := r8.Start(); err != nil {
			t.Fatal(err)
		}
		if r8.BootID() == boot {
			t.Error("Start after a broken reboot should boot anew")
		}
		r8.SetReady(ctx, true)
		mustSSH(t, tb, r8, "true")
	})

	t.Run("StopStart", func(t *testing.T) {
		boot := u22.BootID()
		if err := u22.Stop(); err != nil {
			t.Fatal(err)
		}
		_, e, err := ssh(t, tb, u22, 10*time.Second, "true")
		if err == nil || !strings.Contains(e, "Connection refused") {
			t.Errorf("stopped node: %q %v", e, err)
		}
		if err := u22.Start(); err != nil {
			t.Fatal(err)
		}
		mustSSH(t, tb, u22, "true")
		if u22.BootID() != boot {
			t.Error("Stop/Start is not a reboot")
		}
	})

	t.Run("Hang", func(t *testing.T) {
		if err := u22.Hang(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		cmd := exec.Command("ssh", append([]string{"-o", "ConnectTimeout=1"}, u22.SSHArgs()...)...)
		cmd.Args = append(cmd.Args, "true")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "timed out") {
			t.Errorf("hung node: %q %v", out, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("ssh took %s", d)
		}
		if err := u22.Start(); err != nil {
			t.Fatal(err)
		}
		mustSSH(t, tb, u22, "true")
	})

	t.Run("ChangeHostKey", func(t *testing.T) {
		if err := u22.ChangeHostKey(); err != nil {
			t.Fatal(err)
		}
		_, e, err := ssh(t, tb, u22, 10*time.Second, "true")
		if err == nil || !strings.Contains(e, "REMOTE HOST IDENTIFICATION HAS CHANGED") {
			t.Errorf("changed host key accepted: %q %v", e, err)
		}
	})

	t.Run("SudoPassword", func(t *testing.T) {
		r8.SetSudoPassword(true)
		_, e, err := ssh(t, tb, r8, 10*time.Second, "sudo -n true")
		if err == nil || !strings.Contains(e, "a password is required") {
			t.Errorf("sudo -n with password: %q %v", e, err)
		}
		r8.SetSudoPassword(false)
		mustSSH(t, tb, r8, "sudo -n true")
	})

	t.Run("FillDisk", func(t *testing.T) {
		if err := r8.FillDisk("/etc/logrotate.d"); err != nil {
			t.Fatal(err)
		}
		if got := mustSSH(t, tb, r8, "cat /etc/logrotate.d/custom"); got != "/var/log/custom.log { daily\n missingok\n}\n" {
			t.Errorf("existing file on a full disk: %q", got)
		}
		_, e, err := ssh(t, tb, r8, 10*time.Second, "echo x | sudo -n tee /etc/logrotate.d/new")
		if err == nil || !strings.Contains(e, "No space left on device") {
			t.Errorf("write on a full disk: %q %v", e, err)
		}
		_, e, err = ssh(t, tb, r8, 10*time.Second, "sudo -n touch /etc/logrotate.d/empty")
		if err == nil || !strings.Contains(e, "No space left on device") {
			t.Errorf("create on a full disk: %q %v", e, err)
		}
		if _, _, err := ssh(t, tb, c7, 10*time.Second, "echo x | sudo -n tee /etc/logrotate.d/new"); err != nil {
			t.Errorf("another node's disk is full too: %v", err)
		}
		if err := r8.ClearDisk("/etc/logrotate.d"); err != nil {
			t.Fatal(err)
		}
		mustSSH(t, tb, r8, "echo x | sudo -n tee /etc/logrotate.d/new >/dev/null && sudo rm /etc/logrotate.d/new")
	})

	t.Run("Slow", func(t *testing.T) {
		r8.SetSlow(time.Second)
		start := time.Now()
		mustSSH(t, tb, r8, "true")
		if d := time.Since(start); d < time.Second {
			t.Errorf("slow node answered in %s", d)
		}
		r8.SetSlow(0)
		start = time.Now()
		mustSSH(t, tb, r8, "true")
		t.Logf("one ssh command: %s", time.Since(start))
	})
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// TestStart20AndTeardown brings up the API server and 20 nodes, logs how
// long that took, reboots one, and checks Close leaves no process, mount or
// directory behind.
func TestStart20AndTeardown(t *testing.T) {
	if err := testbed.Requirements(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if testing.Short() && os.Getenv("CI") == "" { // CI always runs the end-to-end tests
		t.Skip("20 nodes: not in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if _, err := testbed.APIServerBinary(ctx); err != nil { // not part of the timing
		t.Fatal(err)
	}
	start := time.Now()
	tb, err := testbed.Start(ctx, testbed.Options{N: 20, Logf: t.Logf, RebootDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start: API server + 20 nodes in %s", time.Since(start).Round(time.Millisecond))
	closed := false
	defer func() {
		if !closed {
			tb.Close()
		}
	}()
	n := tb.Nodes[7]
	ssh(t, tb, n, 10*time.Second, "sudo -n reboot")
	if err := n.WaitReboots(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := tb.Nodes[3].FillDisk("/boot"); err != nil {
		t.Fatal(err)
	}
	tb.Nodes[4].Hang()
	// A session left running on a node must die with it.
	cmd := exec.Command("ssh", append(tb.Nodes[5].SSHArgs(), "sleep 300")...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(500 * time.Millisecond)
	namespaces := map[string]bool{}
	for _, ns := range tb.Namespaces() {
		namespaces[ns] = true
	}
	dir := tb.Dir
	// Every process of the testbed, with its start time (pids get reused).
	before := procsMatching(namespaces, dir)
	if len(before) < 21 { // 20 sshd + the API server at least
		t.Fatalf("only %d testbed processes found before Close: %v", len(before), before)
	}
	start = time.Now()
	closed = true
	if err := tb.Close(); err != nil { // Close itself fails if a process is left in a node namespace
		t.Fatal(err)
	}
	t.Logf("Close in %s", time.Since(start).Round(time.Millisecond))
	// The session's client sees its connection drop and exits.
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		t.Logf("ssh client of the session left running: %v", err)
	case <-time.After(10 * time.Second):
		t.Error("the ssh client of a running session did not notice its node was gone")
	}
	// Killed processes whose parent died are reaped by init: allow a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		for pid, p := range before {
			if st, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && startTime(st) == p.start && pid != strconv.Itoa(cmd.Process.Pid) {
				left = append(left, pid+" "+p.cmdline)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes left after Close: %v", left)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, dir) || strings.Contains(l, "nksrun-testbed") {
			t.Errorf("mount left: %s", l)
		}
	}
	for _, nd := range tb.Nodes {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(nd.Address, strconv.Itoa(nd.Port)), time.Second); err == nil {
			c.Close()
			t.Errorf("node %s still listens", nd.Name)
		}
	}
}

type proc struct{ start, cmdline string }

// procsMatching lists processes in one of the namespaces or whose command
// line mentions dir, by pid.
func procsMatching(namespaces map[string]bool, dir string) map[string]proc {
	out := map[string]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cl, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		ns, _ := os.Readlink("/proc/" + e.Name() + "/ns/mnt")
		st, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		if namespaces[ns] || bytes.Contains(cl, []byte(dir)) {
			out[e.Name()] = proc{startTime(st), string(bytes.ReplaceAll(cl, []byte{0}, []byte{' '}))}
		}
	}
	return out
}

// startTime is field 22 of /proc/PID/stat.
func startTime(stat []byte) string {
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		if f := strings.Fields(s[i+1:]); len(f) > 19 {
			return f[19]
		}
	}
	return ""
}

// BenchmarkStart20 measures Start (API server binary cached) and Close of
// 20 nodes: go test -run - -bench Start20 ./cmd/testbed
func BenchmarkStart20(b *testing.B) {
	if err := testbed.Requirements(); err != nil {
		b.Skip(err)
	}
	ctx := context.Background()
	if _, err := testbed.APIServerBinary(ctx); err != nil {
		b.Fatal(err)
	}
	var start, stop time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		tb, err := testbed.Start(ctx, testbed.Options{N: 20})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := tb.Close(); err != nil {
			b.Fatal(err)
		}
		start += t1.Sub(t0)
		stop += time.Since(t1)
	}
	b.ReportMetric(start.Seconds()/float64(b.N), "start-s/op")
	b.ReportMetric(stop.Seconds()/float64(b.N), "close-s/op")
}
