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
// JSON line with its own phase times; the bench driver times the process.
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

type target struct{ user, addr string }

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
	)
	flag.Var(&hosts, "host", "user@address[:port] (repeatable; instead of -kubeconfig)")
	flag.Parse()
	if err := run(*mode, *kubeconfig, hosts, *port, *user, *key, *known, *file, *src, *timeout, *cmd, *execs, *withStdin); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(mode, kubeconfig string, hosts []string, port int, user, key, known, file, src string, timeout time.Duration, custom string, execs int, withStdin bool) error {
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
		targets = append(targets, target{u, a})
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
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = one(ctx, t, signer, hostKeys, command, content, execs, custom != "")
		}()
	}
	wg.Wait()

	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			if failed <= 5 {
				fmt.Fprintf(os.Stderr, "floor: %s@%s: %v\n", targets[i].user, targets[i].addr, err)
			}
		}
	}
	out, _ := json.Marshal(map[string]any{
		"mode": mode, "nodes": len(targets), "failed": failed,
		"list_ms": listed.Milliseconds(), "ssh_ms": (time.Since(start) - listed).Milliseconds(),
		"wall_ms": time.Since(start).Milliseconds(),
	})
	fmt.Println(string(out))
	if failed > 0 {
		return fmt.Errorf("%d of %d nodes failed", failed, len(targets))
	}
	return nil
}

// one is the whole per-node work: connect, one exec, close.
func one(ctx context.Context, t target, signer ssh.Signer, hostKeys ssh.HostKeyCallback, command string, stdin []byte, execs int, custom bool) error {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return err
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
		return err
	}
	client := ssh.NewClient(cc, chans, reqs)
	defer client.Close()
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
		out = append(out, target{u, addr})
	}
	return out, nil
}
