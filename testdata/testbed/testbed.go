// Package testbed brings up nksrun's end-to-end test environment on one
// machine: a real kube-apiserver (with embedded etcd, built from
// testdata/apiserver) and N worker nodes, each a real OpenSSH sshd on its own
// loopback address (port 22) in its own mount namespace, with real sudo and
// real files. Node-level programs that cannot run here (systemctl, grub2-
// mkconfig/update-grub, reboot, crictl/docker images) are small stand-in
// shell scripts (see standins/) that change the node's state as the real
// ones would. Node objects in the API server carry each node's address,
// NKS labels, nodeInfo and Ready condition; the testbed plays kubelet.
//
// It needs root, openssh-server, sudo and util-linux (mount, nsenter).
package testbed

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// NodeSpec describes one worker node. Zero fields get NKS-like defaults that
// depend on the OS flavour (OSImage).
type NodeSpec struct {
	Name          string            // default "<prefix>-default-w-<rand>-node-<i>"
	OSImage       string            // e.g. "CentOS Linux 7 (Core)", "Rocky Linux 8.10 (Green Obsidian)", "Ubuntu 22.04.4 LTS"
	Kernel        string            // status.nodeInfo.kernelVersion
	Runtime       string            // containerRuntimeVersion, "docker://20.10.7" or "containerd://1.7.13"
	Kubelet       string            // kubeletVersion, e.g. "v1.23.3"
	User          string            // login user; default from OSImage: centos, rocky, ubuntu, debian
	NodeGroup     string            // label magnum.openstack.org/nodegroup (default "default-worker")
	Labels        map[string]string // extra labels
	NotReady      bool              // Ready condition False from the start
	Unschedulable bool
	Units         map[string]bool // systemd stand-in units -> active; nil: rpc-statd, rpcbind, kubelet and the runtime, all active
	Images        []string        // what the crictl/docker stand-ins list and the Node's status.images reports; nil: a few k8s images
	GrubCmdline   string          // GRUB_CMDLINE_LINUX of /etc/default/grub; default per flavour
	// BLS: the RHEL/Rocky 8+ boot layout (RHEL family only): GRUB_ENABLE_BLSCFG=true,
	// one entry per kernel in /boot/loader/entries whose options the boot
	// uses, a grub.cfg that only says blscfg, and the grubby stand-in.
	BLS   bool
	Files map[string]string
	// Files are extra initial files: node path -> content. A path outside the
	// per-node directories makes its parent directory per-node too (a copy
	// of the host's directory).
}

// Options configure Start.
type Options struct {
	Nodes       []NodeSpec
	N           int           // if Nodes is empty: N default nodes cycling CentOS 7, Rocky 8, Ubuntu 22.04 (default 3)
	RebootDelay time.Duration // how long a stand-in reboot keeps the node down (default 1s)
	Dir         string        // state directory (created, removed by Close); default a new temp dir
	Prefix      string        // node name prefix (default "testbed")
	Logf        func(format string, args ...any)
}

// Testbed is a running API server plus nodes.
type Testbed struct {
	Dir        string // everything lives under it; removed by Close
	Kubeconfig string // kubeconfig for the admin token user (system:masters)
	KeyPath    string // ed25519 private key accepted by every node's login user
	KnownHosts string // known_hosts with every node's (initial) host key under its address
	Token      string
	Nodes      []*Node

	APIServerURL string
	RESTConfig   *rest.Config
	Client       kubernetes.Interface
	Dynamic      dynamic.Interface

	opts      Options
	clientMu  sync.RWMutex // guards Client for the nodes' own goroutines
	api       *apiServer
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	nsMu      sync.Mutex
	ns        map[string]bool // every mount namespace a node ever had
	nsFiles   []*os.File      // held open so their inode numbers are not reused before Close
	logf      func(string, ...any)
	started   time.Time
	StartTime time.Duration // how long Start took
}

// Namespaces lists the mount namespaces (as /proc/PID/ns/mnt links) the
// nodes have had. They stay reserved until Close, which checks that no
// process is left in any of them; after Close the kernel may reuse them.
func (tb *Testbed) Namespaces() []string {
	tb.nsMu.Lock()
	defer tb.nsMu.Unlock()
	var out []string
	for ns := range tb.ns {
		out = append(out, ns)
	}
	sort.Strings(out)
	return out
}

// Node returns the node with that name, or nil.
func (tb *Testbed) Node(name string) *Node {
	for _, n := range tb.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Requirements reports why the testbed cannot run on this machine, or nil.
func Requirements() error {
	var miss []string
	if os.Geteuid() != 0 {
		miss = append(miss, "root (uid 0)")
	}
	for _, p := range []string{"/usr/sbin/sshd", "/usr/lib/openssh/sftp-server"} {
		if !fileExists(p) {
			miss = append(miss, p+" (Debian package openssh-server)")
		}
	}
	for _, b := range []string{"sudo", "ssh", "mount", "nsenter", "useradd", "sha256sum"} {
		if _, err := exec.LookPath(b); err != nil {
			miss = append(miss, b)
		}
	}
	if len(miss) > 0 {
		return fmt.Errorf("the nksrun testbed needs %s (as root: apt-get install openssh-server sudo logrotate iproute2)", strings.Join(miss, ", "))
	}
	return nil
}

// New starts a testbed for a test and closes it in t.Cleanup. Without root
// or the packages it skips the test, except when $CI is set: there it fails,
// so a green CI means the end-to-end tests really ran.
func New(t testing.TB, opts Options) *Testbed {
	t.Helper()
	if err := Requirements(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %v", err)
		}
		t.Skipf("skipping end-to-end test: %v", err)
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute) // includes a cold apiserver build
	defer cancel()
	tb, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Errorf("testbed close: %v", err)
		}
	})
	return tb
}

// Start brings up the API server and the nodes and returns when every sshd
// answers and every Node object exists. On error everything started is
// stopped again.
func Start(ctx context.Context, opts Options) (_ *Testbed, err error) {
	if err := Requirements(); err != nil {
		return nil, err
	}
	tb := &Testbed{opts: opts, ns: map[string]bool{}, started: time.Now(), logf: opts.Logf}
	if tb.logf == nil {
		tb.logf = func(string, ...any) {}
	}
	if tb.opts.RebootDelay == 0 {
		tb.opts.RebootDelay = time.Second
	}
	if tb.opts.Prefix == "" {
		tb.opts.Prefix = "testbed"
	}
	tb.ctx, tb.cancel = context.WithCancel(context.Background())
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("testbed: %w", err)
		}
		tb.Dir, _ = filepath.Abs(opts.Dir)
	} else if tb.Dir, err = os.MkdirTemp("", "nksrun-testbed-"); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	os.Chmod(tb.Dir, 0o755)
	defer func() {
		if err != nil {
			tb.Close()
		}
	}()
	tb.Token = randHex(16)

	// The API server starts in the background while the nodes come up.
	bin, err := APIServerBinary(ctx)
	if err != nil {
		return nil, err
	}
	if tb.api, err = startAPIServer(ctx, bin, tb.Dir, tb.Token); err != nil {
		return nil, err
	}
	tb.APIServerURL = tb.api.url

	if err := tb.writeClientKey(); err != nil {
		return nil, err
	}
	// sshd's privilege separation dir, and the (empty) mount point of the
	// nodes' state dir: the only things the testbed leaves on the host,
	// besides the login users.
	for _, d := range []string{"/run/sshd", StateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("testbed: %w", err)
		}
	}
	specs := opts.Nodes
	if len(specs) == 0 {
		n := opts.N
		if n == 0 {
			n = 3
		}
		specs = make([]NodeSpec, n)
		for i := range specs {
			specs[i].OSImage = defaultFlavours[i%len(defaultFlavours)]
		}
	}
	addrs, port, err := allocAddresses(len(specs))
	if err != nil {
		return nil, err
	}
	suffix := randName(5)
	users := map[string]bool{}
	for i, s := range specs {
		n, err := newNode(tb, i, s, suffix, addrs[i], port)
		if err != nil {
			return nil, err
		}
		tb.Nodes = append(tb.Nodes, n)
		users[n.User] = true
	}
	if err := ensureUsers(ctx, users); err != nil {
		return nil, err
	}
	if err := tb.parallel(ctx, 8, func(n *Node) error {
		if err := n.setup(); err != nil {
			return err
		}
		return n.Start()
	}); err != nil {
		return nil, err
	}
	tb.logf("testbed: %d nodes up after %s", len(tb.Nodes), time.Since(tb.started).Round(time.Millisecond))
	if err := tb.writeKnownHosts(); err != nil {
		return nil, err
	}

	if err := tb.api.wait(ctx, tb.Token); err != nil {
		return nil, err
	}
	tb.logf("testbed: API server ready after %s", time.Since(tb.started).Round(time.Millisecond))
	if err := tb.initClients(); err != nil {
		return nil, fmt.Errorf("testbed: clients: %w", err)
	}
	tb.Kubeconfig = filepath.Join(tb.Dir, "kubeconfig")
	if err := tb.WriteKubeconfig(tb.Kubeconfig); err != nil {
		return nil, err
	}
	if err := tb.parallel(ctx, 16, func(n *Node) error { return n.createObject(ctx) }); err != nil {
		return nil, err
	}
	tb.StartTime = time.Since(tb.started)
	tb.logf("testbed: API server %s and %d nodes up in %s (dir %s)", tb.APIServerURL, len(tb.Nodes), tb.StartTime.Round(time.Millisecond), tb.Dir)
	return tb, nil
}

var defaultFlavours = []string{"CentOS Linux 7 (Core)", "Rocky Linux 8.10 (Green Obsidian)", "Ubuntu 22.04.4 LTS"}

func (tb *Testbed) parallel(ctx context.Context, width int, f func(*Node) error) error {
	sem := make(chan struct{}, width)
	errs := make([]error, len(tb.Nodes))
	var wg sync.WaitGroup
	for i, n := range tb.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			errs[i] = f(n)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close stops every node process and the API server, checks that no
// process of the testbed is left, and removes Dir. Nothing is mounted on the
// host: mounts live in the nodes' namespaces and die with their processes.
func (tb *Testbed) Close() error {
	tb.closeOnce.Do(func() {
		if tb.cancel != nil {
			tb.cancel()
		}
		var errs []error
		var wg sync.WaitGroup
		for _, n := range tb.Nodes {
			wg.Add(1)
			go func() { defer wg.Done(); n.Stop() }()
		}
		wg.Wait()
		tb.wg.Wait() // reboot supervisors
		tb.api.stop()
		// Belt and braces: anything still in a node's namespace.
		tb.nsMu.Lock()
		for ns := range tb.ns {
			killNamespace(ns)
		}
		left := processesIn(tb.ns)
		for _, f := range tb.nsFiles {
			f.Close()
		}
		tb.nsFiles = nil
		tb.nsMu.Unlock()
		if len(left) > 0 {
			errs = append(errs, fmt.Errorf("testbed: processes left in node namespaces: %v", left))
		}
		if tb.Dir != "" {
			if err := os.RemoveAll(tb.Dir); err != nil {
				errs = append(errs, fmt.Errorf("testbed: removing %s: %w", tb.Dir, err))
			}
		}
		tb.closeErr = errors.Join(errs...)
	})
	return tb.closeErr
}

func (tb *Testbed) writeClientKey() error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "nksrun-testbed")
	if err != nil {
		return err
	}
	tb.KeyPath = filepath.Join(tb.Dir, "id_ed25519")
	if err := os.WriteFile(tb.KeyPath, pem.EncodeToMemory(blk), 0o600); err != nil {
		return err
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	return os.WriteFile(tb.KeyPath+".pub", ssh.MarshalAuthorizedKey(sp), 0o644)
}

func (tb *Testbed) writeKnownHosts() error {
	var b strings.Builder
	for _, n := range tb.Nodes {
		fmt.Fprintf(&b, "%s %s\n", n.hostPattern(), strings.TrimSpace(n.initialHostKey))
	}
	tb.KnownHosts = filepath.Join(tb.Dir, "known_hosts")
	return os.WriteFile(tb.KnownHosts, []byte(b.String()), 0o644)
}

// allocAddresses picks n loopback addresses 127.A.B.C in a random block,
// checking that port 22 is free on each. When something listens on *:22
// (a host sshd), the nodes use another common port instead.
func allocAddresses(n int) ([]string, int, error) {
	for _, port := range []int{22, 2222, 10022} {
	attempt:
		for try := 0; try < 8; try++ {
			a := 100 + randInt(100)
			b := randInt(256 - (n/250 + 1))
			var addrs []string
			for i := 0; i < n; i++ {
				addr := fmt.Sprintf("127.%d.%d.%d", a, b+i/250, i%250+1)
				l, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
				if err != nil {
					if errors.Is(err, syscall.EADDRINUSE) && i == 0 && try >= 2 {
						break attempt // likely *:port is taken: try another port
					}
					continue attempt
				}
				l.Close()
				addrs = append(addrs, addr)
			}
			return addrs, port, nil
		}
	}
	return nil, 0, errors.New("testbed: no free loopback addresses with port 22, 2222 or 10022 free")
}

var usersMu sync.Mutex

// ensureUsers creates the NKS login users on the host once (no home on the
// host: each node has its own /home), unlocked for key login.
func ensureUsers(ctx context.Context, users map[string]bool) error {
	usersMu.Lock()
	defer usersMu.Unlock()
	lock, err := os.OpenFile("/run/nksrun-testbed-users.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	defer lock.Close()
	if err := flockCtx(ctx, lock); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	for _, u := range names {
		if _, _, err := lookupUser(u); err != nil {
			out, err := exec.Command("useradd", "-M", "-d", "/home/"+u, "-s", "/bin/bash", "-U", u).CombinedOutput()
			if err != nil {
				return fmt.Errorf("testbed: useradd %s: %v: %s", u, err, out)
			}
		}
		sh, _ := os.ReadFile("/etc/shadow")
		for _, l := range strings.Split(string(sh), "\n") {
			f := strings.Split(l, ":")
			if len(f) > 1 && f[0] == u && strings.HasPrefix(f[1], "!") {
				// sshd with UsePAM no refuses locked accounts even for keys.
				if out, err := exec.Command("usermod", "-p", "*", u).CombinedOutput(); err != nil {
					return fmt.Errorf("testbed: usermod -p '*' %s: %v: %s", u, err, out)
				}
			}
		}
	}
	return nil
}

func lookupUser(name string) (uid, gid int, err error) {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) >= 4 && f[0] == name {
			uid, _ = strconv.Atoi(f[2])
			gid, _ = strconv.Atoi(f[3])
			return uid, gid, nil
		}
	}
	return 0, 0, fmt.Errorf("user %s not found", name)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randInt(n int) int {
	v, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
	return int(v.Int64())
}

func randName(n int) string {
	const al = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = al[randInt(len(al))]
	}
	return string(b)
}

func uuidV4() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
