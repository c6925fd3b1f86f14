package testbed

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"embed"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

//go:embed standins/*
var standins embed.FS

// StateDir is the node path of the stand-ins' state (units, images, knobs).
const StateDir = "/var/lib/nksrun-testbed"

// Node is one worker: an sshd in its own mount namespace at Address:Port.
type Node struct {
	Name    string
	Address string // loopback address, also the Node's InternalIP
	User    string // login user (key auth, NOPASSWD sudo)
	Port    int    // 22 unless something on the host already listens on *:22
	Spec    NodeSpec
	Family  string // "rhel" or "debian"
	Root    string // host directory holding the node's private tree: Path(p) == Root+p
	GrubCfg string // node path of grub.cfg (/boot/grub2/grub.cfg or /boot/grub/grub.cfg)

	tb             *Testbed
	machineID      string
	rootUUID       string
	privDirs       []string
	privFiles      []string
	initialHostKey string
	log            string

	mu    sync.Mutex
	state nodeState
	inc   *incarnation
	// sudo settings (SetSudoPassword, LogSudo), guarded by mu
	sudoPassword, sudoLog bool
	hang                  net.Listener
	hangConns             []net.Conn
	rebootBroken          bool
	needBoot              bool
	fills                 []string
	hostKey               string
	reboots               atomic.Int32
}

type nodeState int

const (
	stateDown nodeState = iota
	stateUp
	stateHung
	stateRebooting
)

type incarnation struct {
	cmd      *exec.Cmd
	done     chan struct{}
	ns       string
	stopping bool
}

type flavour struct {
	match, user, family, kernel, runtime, kubelet, grub, grubDefault, id, idLike, codename string
}

var flavours = []flavour{
	{"centos", "centos", "rhel", "3.10.0-1160.el7.x86_64", "docker://20.10.7", "v1.23.3", "crashkernel=auto rhgb quiet", "", "centos", "rhel fedora", ""},
	{"rocky", "rocky", "rhel", "4.18.0-553.el8_10.x86_64", "containerd://1.7.13", "v1.27.8", "crashkernel=auto rhgb quiet", "", "rocky", "rhel centos fedora", ""},
	{"ubuntu", "ubuntu", "debian", "5.15.0-113-generic", "containerd://1.7.13", "v1.27.8", "console=tty1 console=ttyS0", "quiet splash", "ubuntu", "debian", "jammy"},
	{"debian", "debian", "debian", "6.1.0-21-amd64", "containerd://1.6.20", "v1.27.8", "", "quiet", "debian", "", "bookworm"},
	{"", "centos", "rhel", "4.18.0-553.el8_10.x86_64", "containerd://1.7.13", "v1.27.8", "crashkernel=auto rhgb quiet", "", "rhel", "fedora", ""},
}

func flavourOf(osImage string) flavour {
	l := strings.ToLower(osImage)
	for _, f := range flavours {
		if strings.Contains(l, f.match) {
			return f
		}
	}
	return flavours[len(flavours)-1]
}

func newNode(tb *Testbed, i int, s NodeSpec, suffix, addr string, port int) (*Node, error) {
	if s.OSImage == "" {
		s.OSImage = defaultFlavours[i%len(defaultFlavours)]
	}
	f := flavourOf(s.OSImage)
	if s.Name == "" {
		s.Name = fmt.Sprintf("%s-default-w-%s-node-%d", tb.opts.Prefix, suffix, i)
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&s.Kernel, f.kernel)
	def(&s.Runtime, f.runtime)
	def(&s.Kubelet, f.kubelet)
	def(&s.User, f.user)
	def(&s.NodeGroup, "default-worker")
	def(&s.GrubCmdline, f.grub)
	if s.Units == nil {
		rt := "containerd"
		if strings.HasPrefix(s.Runtime, "docker") {
			rt = "docker"
		}
		s.Units = map[string]bool{"rpc-statd": true, "rpcbind": true, "kubelet": true, rt: true}
	}
	if s.Images == nil {
		s.Images = []string{"registry.k8s.io/pause:3.9", "registry.k8s.io/kube-proxy:" + s.Kubelet, "docker.io/calico/node:v3.26.1", "docker.io/coredns/coredns:1.10.1"}
	}
	n := &Node{
		Name: s.Name, Address: addr, User: s.User, Port: port, Spec: s, Family: f.family,
		Root: filepath.Join(tb.Dir, "nodes", s.Name, "root"), log: filepath.Join(tb.Dir, "nodes", s.Name, "sshd.log"),
		tb: tb, machineID: strings.ReplaceAll(uuidV4(), "-", ""), rootUUID: uuidV4(), needBoot: true,
	}
	n.GrubCfg = "/boot/grub2/grub.cfg"
	if f.family == "debian" {
		n.GrubCfg = "/boot/grub/grub.cfg"
	}
	return n, nil
}

// Path returns the host path of node path p, to read or write the node's
// files directly from a test. (After FillDisk(dir) the node sees a tmpfs
// over dir that the host path does not show.)
func (n *Node) Path(p string) string { return filepath.Join(n.Root, p) }

// BootID is the node's current /proc/sys/kernel/random/boot_id.
func (n *Node) BootID() string { return n.readTrim("/proc/sys/kernel/random/boot_id") }

// Cmdline is the node's current /proc/cmdline.
func (n *Node) Cmdline() string { return n.readTrim("/proc/cmdline") }

func (n *Node) readTrim(p string) string {
	b, _ := os.ReadFile(n.Path(p))
	return strings.TrimSpace(string(b))
}

// HostKey is the node's current host public key (authorized_keys format).
func (n *Node) HostKey() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hostKey
}

// Reboots counts the completed stand-in reboots (node back and Ready).
func (n *Node) Reboots() int { return int(n.reboots.Load()) }

// WaitReboots waits until Reboots() >= count.
func (n *Node) WaitReboots(ctx context.Context, count int) error {
	for n.Reboots() < count {
		select {
		case <-ctx.Done():
			return fmt.Errorf("testbed: node %s: waiting for reboot %d (have %d): %w", n.Name, count, n.Reboots(), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Up reports whether the node's sshd is running (not stopped, hung or rebooting).
func (n *Node) Up() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state == stateUp
}

func (n *Node) hostPattern() string {
	if n.Port == 22 {
		return n.Address
	}
	return fmt.Sprintf("[%s]:%d", n.Address, n.Port)
}

// setup lays out the node's private tree under Root.
func (n *Node) setup() error {
	if err := n.setupFiles(); err != nil {
		return fmt.Errorf("testbed: node %s setup: %w", n.Name, err)
	}
	return nil
}

func (n *Node) setupFiles() error {
	f := flavourOf(n.Spec.OSImage)
	n.privDirs = []string{"/etc/logrotate.d", "/etc/default", "/etc/sudoers.d", "/boot", StateDir, "/usr/local/sbin", "/usr/local/bin", "/home", "/var/tmp", "/tmp"}
	// /etc/machine-id is per node, as on real machines: nksrun compares it
	// with the Node's nodeInfo.machineID before it runs anything there.
	// (A host without one gets an empty file to bind over.)
	n.privFiles = []string{"/etc/hosts", "/etc/os-release", "/etc/machine-id", "/proc/cmdline", "/proc/sys/kernel/random/boot_id"}
	if _, err := os.Stat("/etc/machine-id"); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile("/etc/machine-id", nil, 0o444); err != nil {
			return err
		}
	}
	for _, d := range n.privDirs {
		if err := os.MkdirAll(n.Path(d), 0o755); err != nil {
			return err
		}
	}
	for _, d := range []string{"/etc/logrotate.d", "/etc/default"} {
		if err := copyTree(d, n.Path(d)); err != nil {
			return err
		}
	}
	for _, d := range []string{"/tmp", "/var/tmp"} {
		if err := os.Chmod(n.Path(d), 0o1777|os.ModeSticky); err != nil {
			return err
		}
	}
	uid, gid, err := lookupUser(n.User)
	if err != nil {
		return err
	}
	home := n.Path("/home/" + n.User)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	if err := os.Chown(home, uid, gid); err != nil {
		return err
	}
	w := func(p, content string, mode os.FileMode) error {
		if err := os.MkdirAll(filepath.Dir(n.Path(p)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(n.Path(p), []byte(content), mode); err != nil {
			return err
		}
		return os.Chmod(n.Path(p), mode)
	}
	version := regexp.MustCompile(`\d+(\.\d+)*`).FindString(n.Spec.OSImage)
	versionID := version
	if f.family == "debian" && strings.Count(version, ".") > 1 {
		versionID = version[:strings.LastIndex(version, ".")]
	}
	osName := strings.TrimSpace(strings.SplitN(n.Spec.OSImage, version, 2)[0])
	osRel := fmt.Sprintf("NAME=%q\nVERSION=%q\nID=%q\n", osName, strings.TrimSpace(strings.TrimPrefix(n.Spec.OSImage, osName)), f.id)
	if f.idLike != "" {
		osRel += fmt.Sprintf("ID_LIKE=%q\n", f.idLike)
	}
	osRel += fmt.Sprintf("VERSION_ID=%q\nPRETTY_NAME=%q\n", versionID, n.Spec.OSImage)
	if f.codename != "" {
		osRel += "VERSION_CODENAME=" + f.codename + "\n"
	}
	grub := fmt.Sprintf("GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=%q\nGRUB_DEFAULT=saved\nGRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT=\"console\"\nGRUB_CMDLINE_LINUX=%q\nGRUB_DISABLE_RECOVERY=\"true\"\n", osName, n.Spec.GrubCmdline)
	if f.family == "debian" {
		grub = fmt.Sprintf("GRUB_DEFAULT=0\nGRUB_TIMEOUT_STYLE=hidden\nGRUB_TIMEOUT=0\nGRUB_DISTRIBUTOR=%q\nGRUB_CMDLINE_LINUX_DEFAULT=%q\nGRUB_CMDLINE_LINUX=%q\n", osName, f.grubDefault, n.Spec.GrubCmdline)
	}
	if n.Spec.BLS {
		if f.family != "rhel" {
			return fmt.Errorf("BLS: the BLS boot layout is RHEL-family only, not %q", n.Spec.OSImage)
		}
		grub += "GRUB_ENABLE_BLSCFG=true\n"
	}
	hostKey, hostPub, err := newHostKey()
	if err != nil {
		return err
	}
	n.hostKey, n.initialHostKey = hostPub, hostPub
	authKeys, err := os.ReadFile(n.tb.KeyPath + ".pub")
	if err != nil {
		return err
	}
	files := []struct {
		p, c string
		m    os.FileMode
	}{
		{"/etc/hosts", fmt.Sprintf("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n%s %s\n", n.Address, n.Name), 0o644},
		{"/etc/os-release", osRel, 0o644},
		{"/etc/machine-id", n.machineID + "\n", 0o444},
		{"/etc/default/grub", grub, 0o644},
		{"/etc/sudoers.d/90-cloud-init-users", n.sudoers(), 0o440},
		{"/proc/cmdline", "", 0o444},
		{"/proc/sys/kernel/random/boot_id", "", 0o444},
		{StateDir + "/node", fmt.Sprintf("NAME=%s\nFAMILY=%s\nKERNEL=%s\nRUNTIME=%s\nOS_PRETTY=%s\nROOT_UUID=%s\n",
			shq(n.Name), f.family, shq(n.Spec.Kernel), shq(n.Spec.Runtime), shq(n.Spec.OSImage), n.rootUUID), 0o644},
		{StateDir + "/images", strings.Join(n.Spec.Images, "\n") + "\n", 0o644},
		{StateDir + "/sshd/sshd_config", n.sshdConfig(), 0o644},
		{StateDir + "/sshd/ssh_host_ed25519_key", hostKey, 0o600},
		{StateDir + "/sshd/ssh_host_ed25519_key.pub", hostPub, 0o644},
		{StateDir + "/sshd/authorized_keys", string(authKeys), 0o644},
	}
	if len(n.Spec.Images) == 0 {
		files[7].c = ""
	}
	for _, fl := range files {
		if err := w(fl.p, fl.c, fl.m); err != nil {
			return err
		}
	}
	if n.Spec.BLS {
		entry := fmt.Sprintf("title %s (%s)\nversion %[2]s\nlinux /vmlinuz-%[2]s\ninitrd /initramfs-%[2]s.img\noptions root=UUID=%s ro %s\ngrub_users $grub_users\ngrub_arg --unrestricted\ngrub_class %s\n",
			n.Spec.OSImage, n.Spec.Kernel, n.rootUUID, n.Spec.GrubCmdline, f.id)
		if err := w(fmt.Sprintf("/boot/loader/entries/%s-%s.conf", n.machineID, n.Spec.Kernel), entry, 0o644); err != nil {
			return err
		}
	}
	for u, active := range n.Spec.Units {
		st := "inactive"
		if active {
			st = "active"
		}
		if err := w(StateDir+"/units/"+strings.TrimSuffix(u, ".service"), st+"\n", 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(n.Path(StateDir+"/units"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(n.Path(StateDir+"/.fill-stage"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(n.Path(filepath.Dir(n.GrubCfg)), 0o755); err != nil {
		return err
	}
	// Stand-ins, per flavour and runtime, as the real node would have them.
	links := map[string]string{"systemctl": "systemctl", "reboot": "reboot", "shutdown": "reboot", "crictl": "images", "rpcinfo": "rpcinfo"}
	if n.Spec.BLS {
		links["grubby"] = "grubby"
	}
	if f.family == "rhel" {
		links["grub2-mkconfig"] = "grub-mkconfig"
	} else {
		links["grub-mkconfig"] = "grub-mkconfig"
		links["update-grub"] = "update-grub"
	}
	if strings.HasPrefix(n.Spec.Runtime, "docker") {
		links["docker"] = "images"
	}
	for name, src := range links {
		b, err := standins.ReadFile("standins/" + src)
		if err != nil {
			return err
		}
		if err := w("/usr/local/sbin/"+name, string(b), 0o755); err != nil {
			return err
		}
	}
	sess, err := standins.ReadFile("standins/session")
	if err != nil {
		return err
	}
	if err := w(StateDir+"/bin/session", string(sess), 0o755); err != nil {
		return err
	}
	// Extra files; outside the private dirs their parent becomes private.
	paths := make([]string, 0, len(n.Spec.Files))
	for p := range n.Spec.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("Files: %q is not an absolute path", p)
		}
		p = filepath.Clean(p)
		if !n.private(p) {
			if err := n.privatize(filepath.Dir(p)); err != nil {
				return fmt.Errorf("Files: %s: %w", p, err)
			}
		}
		if err := w(p, n.Spec.Files[p], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// private reports whether node path p lies in a per-node directory or is a per-node file.
func (n *Node) private(p string) bool {
	for _, d := range n.privDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	for _, f := range n.privFiles {
		if p == f {
			return true
		}
	}
	return false
}

func (n *Node) privatize(dir string) error {
	// A node directory that the host lacks under /etc or /var/lib (e.g.
	// /etc/kubernetes on a machine without Kubernetes) gets an empty host
	// mount point, left behind like StateDir, instead of privatizing the
	// whole of /etc or /var/lib.
	if p := filepath.Dir(dir); !dirExists(dir) && (p == "/etc" || p == "/var/lib") {
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			return err
		}
	}
	host := dir
	for !dirExists(host) {
		host = filepath.Dir(host)
	}
	for _, bad := range []string{"/proc", "/sys", "/dev", "/run", "/usr/bin", "/usr/sbin", "/usr/lib", "/bin", "/sbin", "/lib"} {
		if host == bad || strings.HasPrefix(host, bad+"/") {
			return fmt.Errorf("the testbed cannot give nodes their own %s", host)
		}
	}
	if host == "/" || host == "/usr" || host == "/var" {
		return fmt.Errorf("the testbed cannot give nodes their own %s (create the directory on the host or use a per-node one: %v)", host, n.privDirs)
	}
	if err := copyTree(host, n.Path(host)); err != nil {
		return err
	}
	n.privDirs = append(n.privDirs, host)
	return os.MkdirAll(n.Path(dir), 0o755)
}

// sudoers is the node's sudoers file for its sudo settings (n.mu held, or
// the node not started yet).
func (n *Node) sudoers() string {
	rule := "NOPASSWD:ALL"
	if n.sudoPassword {
		rule = "ALL"
	}
	rules := fmt.Sprintf("# nksrun testbed: written as cloud-init does on NKS nodes\n%s ALL=(ALL) %s\n", n.User, rule)
	if n.sudoLog {
		rules += fmt.Sprintf("Defaults:%s logfile=%s, loglinelen=0\n", n.User, SudoLogFile)
	}
	return rules
}

func (n *Node) sshdConfig() string {
	return fmt.Sprintf(`# nksrun testbed node %s
ListenAddress %s:%d
HostKey %[4]s/sshd/ssh_host_ed25519_key
AuthorizedKeysFile %[4]s/sshd/authorized_keys
PidFile none
UsePAM no
StrictModes no
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxStartups 1000:30:1000
MaxSessions 100
MaxAuthTries 10
LoginGraceTime 60
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AcceptEnv LANG LC_*
SetEnv PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ForceCommand %[4]s/bin/session
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel INFO
`, n.Name, n.Address, n.Port, StateDir)
}

// mounts returns the node paths to bind, in order: directories parents
// first, /tmp last (it may hide the testbed's own Dir, the mount sources),
// then files.
func (n *Node) mounts() []string {
	dirs := append([]string(nil), n.privDirs...)
	last := func(d string) bool { return d == "/tmp" }
	sort.SliceStable(dirs, func(i, j int) bool {
		if last(dirs[i]) != last(dirs[j]) {
			return !last(dirs[i])
		}
		return strings.Count(dirs[i], "/") < strings.Count(dirs[j], "/")
	})
	// Files go before /tmp too.
	out := append([]string(nil), dirs[:len(dirs)-1]...)
	out = append(out, n.privFiles...)
	return append(out, dirs[len(dirs)-1])
}

const fillFunc = `fill() {
	d=$1 st=` + StateDir + `/.fill-stage
	[ -d "$d" ] || { echo "fill: $d: not a directory" >&2; return 1; }
	mount --bind "$d" "$st"
	kb=$(du -sk "$st" | cut -f1); n=$(find "$st" | wc -l)
	mount -t tmpfs -o "size=$((kb + 4 * n + 64))k,nr_inodes=$((n + 1))" nksrun-testbed-full "$d"
	cp -a "$st/." "$d/"
	umount "$st"
	dd if=/dev/zero of="$d/.nksrun-testbed-fill" bs=4k 2>/dev/null || true
}
`

func (n *Node) script(boot bool) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, m := range n.mounts() {
		fmt.Fprintf(&b, "mount --bind %s %s\n", shq(n.Path(m)), shq(m))
	}
	fmt.Fprintf(&b, "hostname %s\n", shq(n.Name))
	if boot {
		mk := "/usr/local/sbin/grub2-mkconfig"
		if n.Family == "debian" {
			mk = "/usr/local/sbin/grub-mkconfig"
		}
		fmt.Fprintf(&b, "cat /proc/sys/kernel/random/uuid >/proc/sys/kernel/random/boot_id\n")
		fmt.Fprintf(&b, "[ -s %[1]s ] || %[2]s -o %[1]s 2>/dev/null\n", n.GrubCfg, mk)
		fmt.Fprintf(&b, "l=$(sed -n 's/^[[:space:]]*linux[[:space:]][[:space:]]*\\([^[:space:]]*\\)/BOOT_IMAGE=\\1/p' %s | head -n 1)\n", n.GrubCfg)
		// BLS: the first entry's kernel and options ($kernelopts from grubenv).
		fmt.Fprintf(&b, `if grep -qs '^[^#]*blscfg' %s; then
	e=$(ls /boot/loader/entries/*.conf 2>/dev/null | head -n 1)
	ko=$(sed -n 's/^kernelopts=//p' /boot/grub2/grubenv 2>/dev/null | head -n 1)
	[ -z "$e" ] || l="BOOT_IMAGE=(hd0,gpt2)$(sed -n 's/^linux[[:space:]]*//p' "$e" | head -n 1) $(sed -n 's/^options[[:space:]]*//p' "$e" | head -n 1 | awk -v ko="$ko" '{ gsub(/\$kernelopts/, ko); print }')"
fi
`, n.GrubCfg)
		b.WriteString("[ -z \"$l\" ] || printf '%s\\n' \"$l\" >/proc/cmdline\n")
	}
	b.WriteString(fillFunc)
	for _, f := range n.fills {
		fmt.Fprintf(&b, "fill %s\n", shq(f))
	}
	fmt.Fprintf(&b, "rm -f %[1]s/reboot-requested\necho $$ >%[1]s/sshd.pid\nexec /usr/sbin/sshd -D -e -f %[1]s/sshd/sshd_config\n", StateDir)
	return b.String()
}

// bootLocked starts sshd in a new mount namespace and waits until it
// answers. boot: a (re)boot, with a new boot_id and /proc/cmdline from grub.cfg.
func (n *Node) bootLocked(boot bool) error {
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("testbed: node %s: %w", n.Name, err)
	}
	defer logf.Close()
	cmd := exec.Command("/bin/sh", "-c", n.script(boot))
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS, // Go also makes / rprivate
		Setpgid:      true,
		Pdeathsig:    syscall.SIGKILL,
	}
	if err := startOnSpawner(cmd); err != nil {
		return fmt.Errorf("testbed: node %s: starting sshd: %w", n.Name, err)
	}
	inc := &incarnation{cmd: cmd, done: make(chan struct{})}
	// Hold the namespace open until Close: a dead namespace's inode number
	// is reused at once by the next one (another node, another test
	// process), and killing "whatever is in mnt:[N]" must only ever hit ours.
	if f, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid)); err == nil {
		inc.ns, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid))
		n.tb.nsMu.Lock()
		if inc.ns != "" && !n.tb.ns[inc.ns] {
			n.tb.ns[inc.ns] = true
			n.tb.nsFiles = append(n.tb.nsFiles, f)
		} else {
			f.Close()
		}
		n.tb.nsMu.Unlock()
	}
	n.inc = inc
	n.tb.wg.Add(1)
	go n.watch(inc)
	if err := n.waitSSH(inc); err != nil {
		inc.stopping = true
		n.inc = nil
		killIncarnation(inc)
		n.state = stateDown
		return err
	}
	n.state = stateUp
	n.needBoot = false
	return nil
}

func (n *Node) waitSSH(inc *incarnation) error {
	addr := net.JoinHostPort(n.Address, strconv.Itoa(n.Port))
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-inc.done:
			return fmt.Errorf("testbed: node %s (%s): sshd exited during start (%v); log %s:\n%s", n.Name, addr, inc.cmd.ProcessState, n.log, tail(n.log, 2000))
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 8)
			_, err = io.ReadFull(c, buf)
			c.Close()
			if err == nil && string(buf[:4]) == "SSH-" {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("banner %q", buf)
			}
		}
		last = err
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("testbed: node %s: sshd not answering on %s after 20s: %v; log %s:\n%s", n.Name, addr, last, n.log, tail(n.log, 2000))
}

// watch waits for an sshd to exit. An exit nobody asked for is a stand-in
// reboot (reboot-requested marker) or a crash.
func (n *Node) watch(inc *incarnation) {
	defer n.tb.wg.Done()
	inc.cmd.Wait()
	close(inc.done)
	n.mu.Lock()
	if inc.stopping || n.inc != inc {
		n.mu.Unlock()
		return
	}
	n.inc = nil
	if fileExists(n.Path(StateDir + "/reboot-requested")) {
		n.state = stateRebooting
		n.mu.Unlock()
		n.rebootFlow(inc)
		return
	}
	n.state = stateDown
	n.mu.Unlock()
	killIncarnation(inc)
	n.tb.logf("testbed: node %s: sshd exited unexpectedly (%v); log %s:\n%s", n.Name, inc.cmd.ProcessState, n.log, tail(n.log, 1000))
}

func (n *Node) rebootFlow(old *incarnation) {
	killIncarnation(old) // every session drops, as in a real reboot
	ctx := n.tb.ctx
	if n.tb.kube() != nil {
		if err := n.SetReady(ctx, false); err != nil && ctx.Err() == nil {
			n.tb.logf("testbed: node %s: %v", n.Name, err)
		}
	}
	n.mu.Lock()
	broken := n.rebootBroken
	if broken && n.state == stateRebooting {
		n.state = stateDown
		n.needBoot = true
	}
	n.mu.Unlock()
	if broken {
		n.tb.logf("testbed: node %s: reboot is broken, the node stays down", n.Name)
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(n.tb.opts.RebootDelay):
	}
	n.mu.Lock()
	if n.state != stateRebooting {
		n.mu.Unlock()
		return
	}
	err := n.bootLocked(true)
	n.mu.Unlock()
	if err != nil {
		n.tb.logf("testbed: node %s: boot after reboot failed: %v", n.Name, err)
		return
	}
	if n.tb.kube() != nil {
		if err := n.SetReady(ctx, true); err != nil && ctx.Err() == nil {
			n.tb.logf("testbed: node %s: %v", n.Name, err)
		}
	}
	n.reboots.Add(1)
}

// Start brings a stopped or hung node back (same boot; a node that went
// down in a broken reboot boots anew). No-op if it is up.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unhangLocked()
	switch n.state {
	case stateUp:
		return nil
	case stateRebooting:
		return fmt.Errorf("testbed: node %s is rebooting", n.Name)
	}
	return n.bootLocked(n.needBoot)
}

// Stop kills the node's sshd and every process of the node: nothing listens
// on its address any more (connections are refused).
func (n *Node) Stop() error {
	n.mu.Lock()
	n.unhangLocked()
	inc := n.inc
	n.inc = nil
	n.state = stateDown
	if inc != nil {
		inc.stopping = true
	}
	n.mu.Unlock()
	if inc != nil {
		killIncarnation(inc)
	}
	return nil
}

// Hang stops the node and puts a listener on its address that accepts TCP
// connections but never speaks SSH, until Start.
func (n *Node) Hang() error {
	if err := n.Stop(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	l, err := net.Listen("tcp", net.JoinHostPort(n.Address, strconv.Itoa(n.Port)))
	if err != nil {
		return fmt.Errorf("testbed: node %s: hang listener: %w", n.Name, err)
	}
	n.hang, n.state = l, stateHung
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.mu.Lock()
			if n.hang != l {
				c.Close()
			} else {
				n.hangConns = append(n.hangConns, c)
			}
			n.mu.Unlock()
		}
	}()
	return nil
}

func (n *Node) unhangLocked() {
	if n.hang == nil {
		return
	}
	n.hang.Close()
	for _, c := range n.hangConns {
		c.Close()
	}
	n.hang, n.hangConns = nil, nil
	if n.state == stateHung {
		n.state = stateDown
	}
}

// ChangeHostKey gives the node a new host key and restarts its sshd. The
// testbed's KnownHosts keeps the old key, so strict clients must refuse it.
func (n *Node) ChangeHostKey() error {
	priv, pub, err := newHostKey()
	if err != nil {
		return err
	}
	if err := os.WriteFile(n.Path(StateDir+"/sshd/ssh_host_ed25519_key"), []byte(priv), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(n.Path(StateDir+"/sshd/ssh_host_ed25519_key.pub"), []byte(pub), 0o644); err != nil {
		return err
	}
	n.mu.Lock()
	n.hostKey = pub
	n.mu.Unlock()
	if err := n.Stop(); err != nil {
		return err
	}
	return n.Start()
}

// SetSudoPassword makes sudo ask for a password (so sudo -n fails with
// "a password is required"), or restores NOPASSWD.
func (n *Node) SetSudoPassword(required bool) error {
	n.mu.Lock()
	n.sudoPassword = required
	n.mu.Unlock()
	return n.writeSudoers()
}

// writeSudoers replaces the node's sudoers file with the rules its sudo
// settings (SetSudoPassword, LogSudo) make, in one rename.
func (n *Node) writeSudoers() error {
	n.mu.Lock()
	rules := n.sudoers()
	n.mu.Unlock()
	p := n.Path("/etc/sudoers.d/90-cloud-init-users")
	if err := os.WriteFile(p+".tmp", []byte(rules), 0o440); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

// SudoLogFile is where sudo logs each of its runs on a node whose sudo log
// is on (LogSudo), as the node sees the path.
const SudoLogFile = StateDir + "/sudo.log"

// LogSudo makes the node's sudo log every run of the login user to
// SudoLogFile, one line each (as an auth log would show them), or stops it.
// Turning it on empties the log.
func (n *Node) LogSudo(on bool) error {
	if on {
		if err := os.WriteFile(n.Path(SudoLogFile), nil, 0o600); err != nil {
			return err
		}
	}
	n.mu.Lock()
	n.sudoLog = on
	n.mu.Unlock()
	return n.writeSudoers()
}

// SudoRuns are the lines of the node's sudo log (LogSudo): one per run of
// sudo, each with its COMMAND=.
func (n *Node) SudoRuns() ([]string, error) {
	b, err := os.ReadFile(n.Path(SudoLogFile))
	if err != nil {
		return nil, err
	}
	var runs []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "COMMAND=") {
			runs = append(runs, l)
		}
	}
	return runs, nil
}

// Processes are the command lines (arguments joined by spaces) of every
// live process of the node but its listening sshd: sessions, sudo, shells,
// commands, and what they left behind when sshd let them go (a process
// whose session ended is re-parented out of sshd's tree, so the node's
// mount namespace is what tells them apart, not their ancestry).
func (n *Node) Processes() ([]string, error) {
	n.mu.Lock()
	inc := n.inc
	n.mu.Unlock()
	if inc == nil || inc.ns == "" || inc.cmd.Process == nil {
		return nil, fmt.Errorf("testbed: node %s is not running", n.Name)
	}
	var cmds []string
	for _, pid := range processesIn(map[string]bool{inc.ns: true}) {
		if pid == inc.cmd.Process.Pid {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // gone
		}
		if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			continue
		}
		c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cmds = append(cmds, strings.TrimSpace(strings.ReplaceAll(string(c), "\x00", " ")))
	}
	return cmds, nil
}

// FillDisk mounts a small tmpfs over the node directory nodePath, holding a
// copy of its files, then fills it: existing files stay readable, creating
// files or growing them fails with ENOSPC. It lasts across restarts and
// reboots until ClearDisk. The host's Path(nodePath) does not see the tmpfs.
func (n *Node) FillDisk(nodePath string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, f := range n.fills {
		if f == nodePath {
			return nil
		}
	}
	if n.inc != nil {
		if err := n.nsenter("fill "+shq(nodePath), fillFunc); err != nil {
			return err
		}
	}
	n.fills = append(n.fills, nodePath)
	return nil
}

// ClearDisk undoes FillDisk.
func (n *Node) ClearDisk(nodePath string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, f := range n.fills {
		if f == nodePath {
			n.fills = append(n.fills[:i], n.fills[i+1:]...)
			if n.inc != nil {
				return n.nsenter("umount "+shq(nodePath), "")
			}
			return nil
		}
	}
	return nil
}

func (n *Node) nsenter(command, prelude string) error {
	pid := n.inc.cmd.Process.Pid
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-m", "--", "/bin/sh", "-c", "set -e\n"+prelude+command).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed: node %s: %s: %v: %s", n.Name, command, err, out)
	}
	return nil
}

// SetSlow delays every SSH session (command, sftp, shell) on the node by d; 0 undoes it.
func (n *Node) SetSlow(d time.Duration) error {
	p := n.Path(StateDir + "/slow")
	if d <= 0 {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return os.WriteFile(p, []byte(fmt.Sprintf("%.3f\n", d.Seconds())), 0o644)
}

// SetUnit sets a systemctl stand-in unit's state (creating the unit).
func (n *Node) SetUnit(unit string, active bool) error {
	st := "inactive\n"
	if active {
		st = "active\n"
	}
	return os.WriteFile(n.Path(StateDir+"/units/"+strings.TrimSuffix(unit, ".service")), []byte(st), 0o644)
}

// UnitState is the unit's state: active, inactive, failed, or "" if the unit does not exist.
func (n *Node) UnitState(unit string) string {
	return n.readTrim(StateDir + "/units/" + strings.TrimSuffix(unit, ".service"))
}

// UnitActive reports whether the unit is active.
func (n *Node) UnitActive(unit string) bool { return n.UnitState(unit) == "active" }

// SetUnitRestartFails makes "systemctl start/restart UNIT" fail (unit then "failed").
func (n *Node) SetUnitRestartFails(unit string, fail bool) error {
	return n.knob(StateDir+"/units/"+strings.TrimSuffix(unit, ".service")+".restart-fails", fail)
}

// SetGrubBroken makes grub2-mkconfig/update-grub fail and leave grub.cfg.new behind.
func (n *Node) SetGrubBroken(broken bool) error { return n.knob(StateDir+"/grub-broken", broken) }

// SetRebootBroken makes the next stand-in reboots never come back: the node
// stays down (and NotReady) until Start.
func (n *Node) SetRebootBroken(broken bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.rebootBroken = broken
}

// Images is the node's image list as the crictl/docker stand-ins see it.
func (n *Node) Images() []string {
	var out []string
	for _, l := range strings.Split(n.readTrim(StateDir+"/images"), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// SetImages replaces the node's image list and, as a kubelet would within
// a minute, the Node's status.images.
func (n *Node) SetImages(ctx context.Context, images []string) error {
	c := strings.Join(images, "\n")
	if c != "" {
		c += "\n"
	}
	if err := os.WriteFile(n.Path(StateDir+"/images"), []byte(c), 0o644); err != nil {
		return err
	}
	var names []string
	for _, img := range n.reportedImages() {
		names = append(names, img.Names...)
	}
	return n.SetReportedImages(ctx, names)
}

func (n *Node) knob(p string, on bool) error {
	if on {
		return os.WriteFile(n.Path(p), []byte("1\n"), 0o644)
	}
	if err := os.Remove(n.Path(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// SSHArgs are the arguments of the real ssh client to reach the node
// strictly (known_hosts, key, no prompts); append the remote command.
func (n *Node) SSHArgs() []string {
	return []string{"-i", n.tb.KeyPath, "-o", "UserKnownHostsFile=" + n.tb.KnownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "-p", strconv.Itoa(n.Port), n.User + "@" + n.Address}
}

// SSH runs command on the node with the real ssh client.
func (n *Node) SSH(ctx context.Context, command string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, "ssh", append(n.SSHArgs(), command)...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("ssh %s@%s (node %s) %q: %w; stderr: %s", n.User, n.Address, n.Name, command, err, strings.TrimSpace(e.String()))
	}
	return o.String(), e.String(), err
}

func newHostKey() (priv, pub string, err error) {
	p, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	blk, err := ssh.MarshalPrivateKey(k, "")
	if err != nil {
		return "", "", err
	}
	sp, err := ssh.NewPublicKey(p)
	if err != nil {
		return "", "", err
	}
	return string(pem.EncodeToMemory(blk)), string(ssh.MarshalAuthorizedKey(sp)), nil
}

// killIncarnation kills the sshd and every process in its mount namespace.
func killIncarnation(inc *incarnation) {
	if inc.cmd.Process != nil {
		inc.cmd.Process.Signal(syscall.SIGKILL)
	}
	killNamespace(inc.ns)
	<-inc.done
	killNamespace(inc.ns)
}

// killNamespace SIGKILLs every process in mount namespace ns until none is left.
func killNamespace(ns string) {
	if ns == "" {
		return
	}
	set := map[string]bool{ns: true}
	for i := 0; i < 200; i++ {
		pids := processesIn(set)
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// processesIn lists live processes whose mount namespace is in set.
func processesIn(set map[string]bool) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ns, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt")
		if err == nil && set[ns] {
			pids = append(pids, pid)
		}
	}
	return pids
}

var (
	spawnOnce sync.Once
	spawnCh   = make(chan func())
)

// startOnSpawner starts cmd from one OS thread that never exits. Pdeathsig
// fires when the thread that forked the child dies (go.dev/issue/27505), not
// the process: forking from a thread the runtime may retire killed sshds at
// random. With this, the children die with the test process only.
func startOnSpawner(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for f := range spawnCh {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnCh <- func() { errc <- cmd.Start() }
	return <-errc
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// copyTree copies the host directory src (files, dirs, symlinks; modes and
// owners) to dst, keeping what dst already has.
func copyTree(src, dst string) error {
	var total int64
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		t := filepath.Join(dst, rel)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if _, err := os.Lstat(t); err == nil && !d.IsDir() {
			return nil
		}
		st, _ := info.Sys().(*syscall.Stat_t)
		switch {
		case d.IsDir():
			if err := os.MkdirAll(t, info.Mode().Perm()); err != nil {
				return err
			}
			os.Chmod(t, info.Mode()&(fs.ModePerm|fs.ModeSticky|fs.ModeSetgid))
		case info.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, t); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if total += info.Size(); total > 64<<20 {
				return fmt.Errorf("copying %s for a node: more than 64 MiB", src)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(t, b, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return nil
		}
		if st != nil {
			os.Lchown(t, int(st.Uid), int(st.Gid))
		}
		return nil
	})
}
