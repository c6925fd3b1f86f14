package testbed

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// APIServerSource returns the directory of the nested testapiserver module
// (testdata/apiserver). $NKSRUN_APISERVER_SRC overrides it; otherwise it is
// found next to this package's source, or upwards from the working directory.
func APIServerSource() (string, error) {
	if d := os.Getenv("NKSRUN_APISERVER_SRC"); d != "" {
		return d, nil
	}
	var cands []string
	if _, file, _, ok := runtime.Caller(0); ok {
		cands = append(cands, filepath.Join(filepath.Dir(file), "..", "apiserver"))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			cands = append(cands, filepath.Join(d, "testdata", "apiserver"))
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	for _, c := range cands {
		if _, err := os.Stat(filepath.Join(c, "main.go")); err == nil {
			return filepath.Clean(c), nil
		}
	}
	return "", fmt.Errorf("testbed: cannot find testdata/apiserver (tried %v); set NKSRUN_APISERVER_SRC", cands)
}

// CacheDir is where built fixtures are cached: $NKSRUN_CACHE, else
// ~/.cache/nksrun (the user cache dir), else /var/cache/nksrun.
func CacheDir() (string, error) {
	if d := os.Getenv("NKSRUN_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil { // no $HOME: a machine-wide cache still avoids rebuilds
		return "/var/cache/nksrun", nil
	}
	return filepath.Join(d, "nksrun"), nil
}

// apiServerLDFlags stamps the version a real v1.36.3 API server reports,
// so runbooks' cluster.version conditions see what they would on NKS (a
// module build otherwise reports v0.0.0-master).
const apiServerLDFlags = "-X k8s.io/component-base/version.gitVersion=v1.36.3 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36"

// APIServerBinary returns the path of a built testapiserver, building it
// once per content of testdata/apiserver/{go.mod,go.sum,main.go}. The cache
// is shared by parallel test processes (flock): one builds, the others wait.
// $NKSRUN_TESTAPISERVER names a prebuilt binary and skips all of this.
// A cold build takes minutes (Kubernetes); later ones reuse the cache.
func APIServerBinary(ctx context.Context) (string, error) {
	if b := os.Getenv("NKSRUN_TESTAPISERVER"); b != "" {
		return b, nil
	}
	src, err := APIServerSource()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", fmt.Errorf("testbed: hashing apiserver source: %w", err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	fmt.Fprintf(h, "%s/%s %s\n", runtime.GOOS, runtime.GOARCH, apiServerLDFlags)
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", fmt.Errorf("testbed: %w", err)
	}
	bin := filepath.Join(cache, "testapiserver-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	lock, err := os.OpenFile(filepath.Join(cache, "testapiserver.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("testbed: %w", err)
	}
	defer lock.Close()
	if err := flockCtx(ctx, lock); err != nil {
		return "", fmt.Errorf("testbed: waiting for the apiserver build lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // built by another process while we waited
	}
	// The go that runs the tests (go test sets GOROOT for them), else the
	// one on PATH.
	goBin := "go"
	if root := os.Getenv("GOROOT"); root != "" && fileExists(filepath.Join(root, "bin", "go")) {
		goBin = filepath.Join(root, "bin", "go")
	}
	tmp := bin + ".tmp" + strconv.Itoa(os.Getpid())
	cmd := exec.CommandContext(ctx, goBin, "build", "-ldflags", apiServerLDFlags, "-o", tmp, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	start := time.Now()
	fmt.Fprintf(os.Stderr, "testbed: building the test kube-apiserver in %s (minutes when cold, cached in %s)\n", src, cache)
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("testbed: go build in %s: %w\n%s", src, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", fmt.Errorf("testbed: %w", err)
	}
	fmt.Fprintf(os.Stderr, "testbed: built %s in %s\n", bin, time.Since(start).Round(time.Second))
	return bin, nil
}

func flockCtx(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// freePorts returns a port p for the API server and e for etcd, with e+1
// (etcd's peer port) free too.
func freePorts() (api, etcd int, err error) {
	pick := func() (int, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	for i := 0; i < 50; i++ {
		a, err := pick()
		if err != nil {
			return 0, 0, err
		}
		e, err := pick()
		if err != nil {
			return 0, 0, err
		}
		if e == a || e+1 == a || e+1 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", e+1))
		if err != nil {
			continue
		}
		l.Close()
		return a, e, nil
	}
	return 0, 0, errors.New("testbed: no free loopback ports for the API server")
}

type apiServer struct {
	cmd    *exec.Cmd
	done   chan struct{}
	dir    string
	log    string
	url    string
	caFile string
}

func startAPIServer(ctx context.Context, bin, dir, token string) (*apiServer, error) {
	port, etcdPort, err := freePorts()
	if err != nil {
		return nil, err
	}
	a := &apiServer{
		dir:    filepath.Join(dir, "apiserver"),
		log:    filepath.Join(dir, "apiserver.log"),
		url:    fmt.Sprintf("https://127.0.0.1:%d", port),
		done:   make(chan struct{}),
		caFile: filepath.Join(dir, "apiserver", "certs", "apiserver.crt"),
	}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.Create(a.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	a.cmd = exec.Command(bin, "-dir", a.dir, "-port", strconv.Itoa(port), "-etcd-port", strconv.Itoa(etcdPort), "-token", token)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startOnSpawner(a.cmd); err != nil {
		return nil, fmt.Errorf("testbed: starting %s: %w", bin, err)
	}
	go func() { a.cmd.Wait(); close(a.done) }()
	return a, nil
}

// wait blocks until /readyz answers 200.
func (a *apiServer) wait(ctx context.Context, token string) error {
	deadline := time.Now().Add(180 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-a.done:
			return fmt.Errorf("testbed: kube-apiserver exited (%v) before it was ready; log %s:\n%s", a.cmd.ProcessState, a.log, tail(a.log, 3000))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		ca, err := os.ReadFile(a.caFile)
		if err != nil {
			last = err
			continue
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			last = fmt.Errorf("bad CA in %s", a.caFile)
			continue
		}
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		req, _ := http.NewRequestWithContext(ctx, "GET", a.url+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			last = err
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.CloseIdleConnections()
		if resp.StatusCode == 200 {
			return nil
		}
		last = fmt.Errorf("readyz %d: %s", resp.StatusCode, body)
	}
	return fmt.Errorf("testbed: kube-apiserver at %s not ready after 180s: %v; log %s:\n%s", a.url, last, a.log, tail(a.log, 3000))
}

func (a *apiServer) stop() {
	if a == nil || a.cmd == nil || a.cmd.Process == nil {
		return
	}
	// Its etcd data is thrown away with Dir: no need for a graceful stop.
	pgid := a.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-a.done
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
