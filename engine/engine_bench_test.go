package engine

// Benchmarks of the engine's pure hot paths at NKS scale (200 nodes), with
// SSH replaced by a canned runner that answers exactly what real nodes
// answer. They show what nksrun itself costs per node, apart from sshd and
// sudo (measured end to end by `make bench`, testdata/bench).
//
//	go test ./engine -run '^$' -bench . -benchmem

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"nksrun/engine/gather"
	"nksrun/engine/module"
	"nksrun/engine/planfile"
	"nksrun/engine/plans"
	"nksrun/engine/redact"
	"nksrun/engine/runbook"
	"nksrun/engine/views"
	"nksrun/inventory"
	"nksrun/modules"
)

const benchNodes = 200

const benchRunbook = "../runbooks/logrotate.yaml"

// cannedNode answers the engine's commands as a docker node whose
// /etc/logrotate.d/docker holds `current`.
type cannedNode struct {
	current []byte
	execs   atomic.Int64
}

var (
	probeStartRE = regexp.MustCompile(`(?m)^printf '%s\\n' '(--nksrun-[0-9a-f]+) (\d+)'\n\( `)
)

func (c *cannedNode) Run(_ context.Context, command string, opts module.RunOpts) (module.RunResult, error) {
	c.execs.Add(1)
	if opts.Stdin != nil { // file_sync's install: read it all, succeed
		b, _ := io.ReadAll(opts.Stdin)
		c.current = b
		return module.RunResult{}, nil
	}
	sum := sha256.Sum256(c.current)
	hash := hex.EncodeToString(sum[:])
	var out bytes.Buffer
	locs := probeStartRE.FindAllStringSubmatchIndex(command, -1)
	for k, loc := range locs {
		boundary, idx := command[loc[2]:loc[3]], command[loc[4]:loc[5]]
		end := len(command)
		if k+1 < len(locs) {
			end = locs[k+1][0]
		}
		cmd := command[loc[1]:end]
		var body string
		switch {
		case strings.Contains(cmd, "boot_id"):
			body = "0f6d3f1c-5b7e-4d55-9a2c-3e1b2c4d5e6f\n"
		case strings.Contains(cmd, "/proc/cmdline"):
			body = "BOOT_IMAGE=/vmlinuz-3.10.0-1160.el7.x86_64 root=UUID=0a1b2c3d ro crashkernel=auto rhgb quiet\n"
		case strings.Contains(cmd, "uname"):
			body = "3.10.0-1160.el7.x86_64\n"
		case strings.Contains(cmd, "os-release"):
			body = "centos\n"
		case strings.Contains(cmd, "stat -c"):
			// file_sync's state probe: state line, then the old content
			// only when it differs from the desired hash in the command.
			body = hash + " 644 root root 0\n"
			if !strings.Contains(cmd, `"$h" = `+hash) {
				body += string(c.current)
			}
		case strings.Contains(cmd, "head -c"):
			body = string(c.current)
		case strings.Contains(cmd, "sha256sum"):
			body = hash + "\n"
		}
		fmt.Fprintf(&out, "%s %s\n%s\n%s rc=0\n", boundary, idx, body, boundary)
	}
	return module.RunResult{Stdout: out.Bytes()}, nil
}

// recorder keeps the output and boundary of one Run.
type recorder struct {
	r        module.Runner
	out      []byte
	boundary string
}

func (r *recorder) Run(ctx context.Context, command string, opts module.RunOpts) (module.RunResult, error) {
	res, err := r.r.Run(ctx, command, opts)
	r.out = res.Stdout
	if m := probeStartRE.FindStringSubmatch(command); m != nil {
		r.boundary = m[1]
	}
	return res, err
}

// replayRunner answers with a recorded output under the call's boundary.
type replayRunner struct{ tmpl []byte }

func (r replayRunner) Run(_ context.Context, command string, _ module.RunOpts) (module.RunResult, error) {
	i := strings.Index(command, "'--nksrun-")
	j := strings.IndexByte(command[i+1:], ' ')
	return module.RunResult{Stdout: bytes.ReplaceAll(r.tmpl, []byte("@B@"), []byte(command[i+1:i+1+j]))}, nil
}

type cannedConnector struct{ nodes map[string]*cannedNode }

func (c cannedConnector) Connect(_ context.Context, h inventory.Host) (module.Runner, error) {
	return c.nodes[h.Name], nil
}

// benchHosts are n docker Nodes as the cluster inventory builds them.
func benchHosts(n int) []inventory.Host {
	hosts := make([]inventory.Host, n)
	for i := range hosts {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("prod-default-w-abcde-node-%d", i), Labels: map[string]string{
				inventory.LabelNodeGroup: "default-worker", inventory.LabelRole: "worker",
				"kubernetes.io/hostname": fmt.Sprintf("prod-default-w-abcde-node-%d", i),
			}},
			Status: corev1.NodeStatus{
				Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)}},
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
				NodeInfo: corev1.NodeSystemInfo{OSImage: "CentOS Linux 7 (Core)", KernelVersion: "3.10.0-1160.el7.x86_64",
					ContainerRuntimeVersion: "docker://20.10.7", KubeletVersion: "v1.23.3"},
			},
		}
		hosts[i] = inventory.FromNode(node)
	}
	return hosts
}

func loadBenchRunbook(b *testing.B) *runbook.Runbook {
	b.Helper()
	rb, err := runbook.Load(benchRunbook, modules.Registry())
	if err != nil {
		b.Fatal(err)
	}
	return rb
}

// benchEngine is an engine over n canned nodes holding `current`.
func benchEngine(n int, current []byte) (*Engine, cannedConnector) {
	hosts := benchHosts(n)
	conn := cannedConnector{nodes: map[string]*cannedNode{}}
	for _, h := range hosts {
		conn.nodes[h.Name] = &cannedNode{current: current}
	}
	e := New(Options{Registry: modules.Registry(), Connector: conn, Hosts: hosts, Forks: 256,
		Now: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }})
	return e, conn
}

func wantConfig(b *testing.B) []byte {
	want, err := os.ReadFile("../runbooks/files/docker-logrotate.conf")
	if err != nil {
		b.Fatal(err)
	}
	return want
}

// BenchmarkLoadRunbook: read, strictly decode and validate (expressions
// compiled, module params checked) the logrotate runbook; done once per run.
func BenchmarkLoadRunbook(b *testing.B) {
	reg := modules.Registry()
	src, err := os.ReadFile(benchRunbook)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := runbook.Parse(benchRunbook, src, reg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProbeParse200: split the one-exec fact output of 200 nodes
// (built-in facts, the declared fact, file_sync's state and content probes).
func BenchmarkProbeParse200(b *testing.B) {
	rb := loadBenchRunbook(b)
	want := wantConfig(b)
	probes := append(append([]module.Probe{}, gather.BuiltinProbes...), gather.FactProbes(rb, nil, nil)...,
	)
	probes = append(probes, module.Probe{Key: "step.config.state", Command: "stat -c ... head -c (file_sync's state probe)"})
	// Record one node's answer once, then replay it with each call's
	// boundary, so the loop measures gather.Run, not the canned node.
	rec := &recorder{r: &cannedNode{current: want}}
	if _, err := gather.Run(context.Background(), rec, probes); err != nil {
		b.Fatal(err)
	}
	node := replayRunner{tmpl: bytes.ReplaceAll(rec.out, []byte(rec.boundary), []byte("@B@"))}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		for range benchNodes {
			res, err := gather.Run(ctx, node, probes)
			if err != nil {
				b.Fatal(err)
			}
			if len(res) != len(probes) {
				b.Fatalf("%d results", len(res))
			}
		}
	}
}

// BenchmarkPlan200: the whole plan of 200 nodes (skip rules, step
// preparation, facts, file_sync's Plan), no SSH; with nothing to change and
// with every node differing (diffs made).
func BenchmarkPlan200(b *testing.B) {
	rb := loadBenchRunbook(b)
	for _, bc := range []struct {
		name    string
		current []byte
		count   func(plans.Counts) int
	}{
		{"in-sync", wantConfig(b), func(c plans.Counts) int { return c.NoOp }},
		{"changed", []byte("# old config\n/var/lib/docker/containers/*/*.log {\n  rotate 5\n}\n"), func(c plans.Counts) int { return c.Change }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e, _ := benchEngine(benchNodes, bc.current)
			defer e.Close()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				p, err := e.Plan(ctx, []*runbook.Runbook{rb}, nil)
				if err != nil {
					b.Fatal(err)
				}
				if c := p.Counts(); bc.count(c) != benchNodes {
					b.Fatalf("counts %+v", c)
				}
			}
		})
	}
}

func changedPlan(b *testing.B) *plans.Plan {
	rb := loadBenchRunbook(b)
	e, _ := benchEngine(benchNodes, []byte("# old config\n/var/lib/docker/containers/*/*.log {\n  rotate 5\n}\n"))
	defer e.Close()
	p, err := e.Plan(context.Background(), []*runbook.Runbook{rb}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkRender200: render a 200-node plan where every node changes (a
// diff per node), in each format, plus Seal (the checksum over its JSON).
func BenchmarkRender200(b *testing.B) {
	p := changedPlan(b)
	for _, format := range []string{views.FormatText, views.FormatMarkdown, views.FormatJSON} {
		b.Run(format, func(b *testing.B) {
			var buf bytes.Buffer
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				if err := views.RenderPlan(&buf, p, format, &redact.Secrets{}); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(buf.Len()))
		})
	}
	b.Run("seal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := planfile.Seal(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkApply200: apply a 200-node plan where every node changes
// (file_sync's install + verify's fact re-read), no SSH.
func BenchmarkApply200(b *testing.B) {
	rb := loadBenchRunbook(b)
	old := []byte("# old config\n")
	e, conn := benchEngine(benchNodes, old)
	defer e.Close()
	ctx := context.Background()
	p, err := e.Plan(ctx, []*runbook.Runbook{rb}, nil)
	if err != nil {
		b.Fatal(err)
	}
	var execs int64
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for _, n := range conn.nodes {
			n.current = old
			execs -= n.execs.Load()
		}
		b.StartTimer()
		rep, err := e.Apply(ctx, p, nil)
		if err != nil {
			b.Fatal(err)
		}
		if rep.Failed() {
			b.Fatalf("apply failed: %+v", rep.Targets[0])
		}
		for _, n := range conn.nodes {
			execs += n.execs.Load()
		}
	}
	b.ReportMetric(float64(execs)/float64(b.N)/benchNodes, "execs/node")
}
