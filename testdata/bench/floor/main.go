// Command floor is the performance floor nksrun is measured against: the
// least work that can answer "which nodes differ" (plan) or "put this file
// on every node" (apply) over SSH. It uses golang.org/x/crypto/ssh directly,
// no nksrun code: it lists the Nodes once (client-go, the same kubeconfig
// nksrun reads) or takes addresses from flags, opens one SSH connection per
// node, all at once, and runs exactly one exec per node:
//
//	plan:  sudo -n sha256sum FILE
//	apply: sudo -n sh -c 'cat > TMP && mv -f TMP FILE'   (content on stdin)
//
// Host keys are verified against known_hosts, as nksrun does. It prints one
// JSON line (Result): its phase times and every node's outcome, so the bench
// driver can refuse a run that did not reach every node (a run that lost
// nodes finishes early and would flatter the floor). It exits 1 when any
// node failed.
//
// All connections start at once and there is no handshake timeout. With
// -retries N a node whose connection or handshake failed (refused, reset,
// dropped by sshd's LoginGraceTime) is dialled again, up to N more times:
// the least work that still reaches every node of an overloaded machine.
// How many nodes failed their first attempt is in the result.
//
//	floor -mode plan  -kubeconfig KUBECONFIG -i KEY -known-hosts FILE
//	floor -mode apply -src runbooks/files/docker-logrotate.conf -host centos@127.0.0.1 ...
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type target struct{ name, user, addr string }

// Result is the floor's one line of JSON output.
type Result struct {
	Mode    string `json:"mode"`
	Nodes   int    `json:"nodes"`
	OK      int    `json:"ok"`
	Failed  int    `json:"failed"`
	Retried int    `json:"retried"` // nodes whose first connection attempt failed (reached later or not)
	// Failures names every node that failed in the end, with its last error.
	Failures []Failure `json:"failures,omitempty"`
	ListMS   int64     `json:"list_ms"`
	SSHMS    int64     `json:"ssh_ms"`
	WallMS   int64     `json:"wall_ms"`
}

// Failure is one node the floor did not complete.
type Failure struct {
	Node     string `json:"node"`
	Addr     string `json:"addr"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error"`
}

// connError marks a failure before any command ran (dial, handshake,
// auth): only those are retried, a failed command is a result.
type connError struct{ err error }

func (e connError) Error() string { return e.err.Error() }
func (e connError) Unwrap() error { return e.err }

type hostList []string

func (h *hostList) String() string     { return strings.Join(*h, ",") }
func (h *hostList) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	var (
		mode       = flag.String("mode", "plan", "plan (one sudo sha256sum per node) or apply (one streamed atomic install per node)")
		kubeconfig = flag.String("kubeconfig", "", "list the cluster's Nodes (InternalIP, user from osImage) from this kubeconfig")
		hosts      hostList
		port       = flag.Int("port", 22, "SSH port")
		user       = flag.String("user", "", "SSH user for every node (default from the Node's osImage)")
		key        = flag.String("i", "", "private key file")
		known      = flag.String("known-hosts", "", "known_hosts file")
		file       = flag.String("file", "/etc/logrotate.d/docker", "file on the nodes")
		src        = flag.String("src", "runbooks/files/docker-logrotate.conf", "local content for -mode apply")
		timeout    = flag.Duration("timeout", 2*time.Minute, "limit for the whole run")
		cmd        = flag.String("cmd", "", "cost model: run this command instead of the mode's (plan-style, no stdin)")
		execs      = flag.Int("execs", 1, "cost model: run the command this many times, one after the other, on each node's one connection")
		withStdin  = flag.Bool("stdin", false, "cost model: stream -src to -cmd's stdin")
		then       = flag.String("then", "", "cost model: after -cmd (run without stdin), run this command on the same connection (with -stdin, streaming -src to it)")
		retries    = flag.Int("retries", 0, "dial a node again up to this many times when its connection or handshake failed (0: one attempt, all at once)")
	)
	flag.Var(&hosts, "host", "user@address[:port] (repeatable; instead of -kubeconfig)")
	flag.Parse()
	if err := run(*mode, *kubeconfig, hosts, *port, *user, *key, *known, *file, *src, *timeout, *cmd, *then, *execs, *withStdin, *retries); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(mode, kubeconfig string, hosts []string, port int, user, key, known, file, src string, timeout time.Duration, custom, then string, execs int, withStdin bool, retries int) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	var content []byte
	var command string
	var err error
	switch mode {
	case "plan":
		command = "sudo -n sha256sum " + file
	case "apply":
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		content = b
		tmp := path.Join(path.Dir(file), ".floor-"+path.Base(file)+".tmp")
		command = fmt.Sprintf("sudo -n sh -c 'cat > %s && mv -f %s %s'", tmp, tmp, file)
	default:
		return fmt.Errorf("-mode %q: want plan or apply", mode)
	}
	if custom != "" {
		command, content = custom, nil
		if withStdin {
			if content, err = os.ReadFile(src); err != nil {
				return err
			}
		}
	}

	pem, err := os.ReadFile(key)
	if err != nil {
		return err
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		return err
	}
	hostKeys, err := knownhosts.New(known)
	if err != nil {
		return err
	}

	var targets []target
	if kubeconfig != "" {
		if targets, err = listNodes(ctx, kubeconfig, user); err != nil {
			return err
		}
	}
	for _, h := range hosts {
		u, a, ok := strings.Cut(h, "@")
		if !ok {
			return fmt.Errorf("-host %q: want user@address[:port]", h)
		}
		targets = append(targets, target{h, u, a})
	}
	for i, t := range targets {
		if _, _, err := net.SplitHostPort(t.addr); err != nil {
			targets[i].addr = net.JoinHostPort(t.addr, strconv.Itoa(port))
		}
	}
	if len(targets) == 0 {
		return errors.New("no nodes: pass -kubeconfig or -host")
	}
	listed := time.Since(start)

	errs := make([]error, len(targets))
	attempts := make([]int, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				attempts[i]++
				errs[i] = one(ctx, t, signer, hostKeys, command, then, content, execs, custom != "")
				var ce connError
				if errs[i] == nil || !errors.As(errs[i], &ce) || attempts[i] > retries || ctx.Err() != nil {
					return
				}
				// Back off a little more each time, so retries do not
				// arrive as one more wave.
				select {
				case <-time.After(time.Duration(attempts[i]) * time.Second):
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()

	res := Result{Mode: mode, Nodes: len(targets)}
	for i, err := range errs {
		if attempts[i] > 1 {
			res.Retried++
		}
		if err == nil {
			res.OK++
			continue
		}
		res.Failed++
		res.Failures = append(res.Failures, Failure{Node: targets[i].name, Addr: targets[i].addr, Attempts: attempts[i], Error: err.Error()})
		if res.Failed <= 5 {
			fmt.Fprintf(os.Stderr, "floor: %s (%s@%s): %v\n", targets[i].name, targets[i].user, targets[i].addr, err)
		}
	}
	res.ListMS, res.SSHMS, res.WallMS = listed.Milliseconds(), (time.Since(start) - listed).Milliseconds(), time.Since(start).Milliseconds()
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if res.Failed > 0 {
		return fmt.Errorf("%d of %d nodes failed", res.Failed, len(targets))
	}
	return nil
}

// one is the whole per-node work: connect, one exec, close.
func one(ctx context.Context, t target, signer ssh.Signer, hostKeys ssh.HostKeyCallback, command, then string, stdin []byte, execs int, custom bool) error {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return connError{err}
	}
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	cc, chans, reqs, err := ssh.NewClientConn(raw, t.addr, &ssh.ClientConfig{
		User:            t.user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: hostKeys,
	})
	if err != nil {
		raw.Close()
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) {
			return fmt.Errorf("ssh handshake: %w", err) // a wrong host key stays wrong: no retry
		}
		return connError{fmt.Errorf("ssh handshake: %w", err)}
	}
	client := ssh.NewClient(cc, chans, reqs)
	defer client.Close()
	if then != "" {
		if err := exec1(client, command, nil, custom); err != nil {
			return err
		}
		return exec1(client, then, stdin, custom)
	}
	for range execs {
		if err := exec1(client, command, stdin, custom); err != nil {
			return err
		}
	}
	return nil
}

func exec1(client *ssh.Client, command string, stdin []byte, custom bool) error {
	sess, err := client.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	if stdin != nil {
		sess.Stdin = bytes.NewReader(stdin)
	}
	if err := sess.Run(command); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	if stdin == nil && !custom && len(stdout.Bytes()) < 64 {
		return fmt.Errorf("unexpected output %q", stdout.String())
	}
	return nil
}

// listNodes lists the Nodes once: address = InternalIP, user from osImage
// (as NKS images name their login user), unless -user is given.
func listNodes(ctx context.Context, kubeconfig, user string) ([]target, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []target
	for _, n := range list.Items {
		var addr string
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				addr = a.Address
				break
			}
		}
		u := user
		if u == "" {
			img := strings.ToLower(n.Status.NodeInfo.OSImage)
			for _, cand := range []string{"centos", "rocky", "ubuntu", "debian"} {
				if strings.Contains(img, cand) {
					u = cand
					break
				}
			}
		}
		if addr == "" || u == "" {
			return nil, fmt.Errorf("node %s: no InternalIP or no user for %q", n.Name, n.Status.NodeInfo.OSImage)
		}
		out = append(out, target{n.Name, u, addr})
	}
	return out, nil
}
