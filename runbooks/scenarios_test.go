package runbooks_test

// The scenario harness: every directory under testdata/scenarios/<runbook>/<scenario>/
// is one cluster + node state, run against one shared testbed (a real API
// server and three real sshd nodes) and checked against the runbook
// contract (README "Runbook contract"; format in testdata/scenarios/README.md).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"nksrun/cmd/nksrun/cli"
	"nksrun/engine/module"
	"nksrun/engine/plans"
	"nksrun/testdata/testbed"
)

var updateGolden = flag.Bool("update", false, "rewrite the scenarios' plan.golden files")

// runNksrun is the harness's only use of the CLI package (one line to change
// when the package moves).
func runNksrun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Run(ctx, args, strings.NewReader(""), stdout, stderr)
}

// scenarioRoles are the testbed's nodes, named by role in scenario files.
// Node names and addresses are random; plans and goldens use the role. el8
// boots with the BLS layout (entries in /boot/loader/entries, grubby).
var scenarioRoles = []struct {
	role string
	spec testbed.NodeSpec
}{
	{"el7", testbed.NodeSpec{OSImage: "CentOS Linux 7 (Core)", Kernel: "3.10.0-1160.el7.x86_64", Runtime: "docker://20.10.7", Kubelet: "v1.23.3"}},
	{"el8", testbed.NodeSpec{OSImage: "Rocky Linux 8.10 (Green Obsidian)", Kernel: "4.18.0-553.el8_10.x86_64", Runtime: "containerd://1.7.13", Kubelet: "v1.29.3", BLS: true}},
	{"ubuntu", testbed.NodeSpec{OSImage: "Ubuntu 22.04.4 LTS", Kernel: "5.15.0-113-generic", Runtime: "containerd://1.7.13", Kubelet: "v1.29.3"}},
}

// Contract cases.
const (
	caseHealthy = "healthy"
	caseBroken  = "broken"
	casePartly  = "partly-fixed"
	caseUnknown = "unknown"
)

type scenario struct {
	Description string             `json:"description"`
	Case        string             `json:"case"`
	Set         []string           `json:"set"`
	Nodes       map[string]nodeSet `json:"nodes"`
	Expect      struct {
		// Changes are the steps that change, "cluster/<step>" or
		// "<role>/<step>"; exactly these and no other.
		Changes []string `json:"changes"`
		// Findings are the steps that report a finding (exactly these).
		Findings []string `json:"findings"`
		// Unknown maps "<target>/<step>" to a substring of its reason.
		Unknown map[string]string `json:"unknown"`
		// Evidence are substrings the text plan must show.
		Evidence []string `json:"evidence"`
		// Absent are substrings the text plan must not show.
		Absent []string `json:"absent"`
	} `json:"expect"`
	// Bystanders are objects and node files that must not change (a
	// healthy scenario checks every seeded object and file besides).
	Bystanders struct {
		Objects []objRef   `json:"objects"`
		Files   []nodeFile `json:"files"`
	} `json:"bystanders"`

	runbook, name, dir string
}

type nodeSet struct {
	Files   map[string]string `json:"files"`
	Remove  []string          `json:"remove"`
	Units   map[string]string `json:"units"` // active | inactive | failed | absent
	Cmdline *string           `json:"cmdline"`
	Kernel  string            `json:"kernel"`
	Run     []string          `json:"run"`
}

type objRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
}

func (o objRef) String() string {
	if o.Namespace == "" {
		return o.Kind + " " + o.Name
	}
	return o.Kind + " " + o.Namespace + "/" + o.Name
}

type nodeFile struct {
	Node string `json:"node"`
	Path string `json:"path"`
}

// loadScenarios reads every scenario directory.
func loadScenarios(t *testing.T) []*scenario {
	t.Helper()
	dirs, err := filepath.Glob("testdata/scenarios/*/*/scenario.yaml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	var out []*scenario
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var s scenario
		if err := yaml.UnmarshalStrict(b, &s); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		s.dir = filepath.Dir(f)
		s.name = filepath.Base(s.dir)
		s.runbook = filepath.Base(filepath.Dir(s.dir))
		if _, err := os.Stat(s.runbook + ".yaml"); err != nil {
			t.Fatalf("%s: no runbook %s.yaml", f, s.runbook)
		}
		switch s.Case {
		case caseHealthy, caseBroken, casePartly, caseUnknown:
		default:
			t.Fatalf("%s: case %q: want healthy, broken, partly-fixed or unknown", f, s.Case)
		}
		for role := range s.Nodes {
			if roleIndex(role) < 0 {
				t.Fatalf("%s: node role %q: want el7, el8 or ubuntu", f, role)
			}
		}
		out = append(out, &s)
	}
	return out
}

func roleIndex(role string) int {
	for i, r := range scenarioRoles {
		if r.role == role {
			return i
		}
	}
	return -1
}

// TestScenariosLoad checks the scenario files without a testbed, and that
// each runbook owning scenarios has the four contract cases.
func TestScenariosLoad(t *testing.T) {
	cases := map[string]map[string]bool{}
	for _, s := range loadScenarios(t) {
		if cases[s.runbook] == nil {
			cases[s.runbook] = map[string]bool{}
		}
		cases[s.runbook][s.Case] = true
		if len(s.Bystanders.Objects)+len(s.Bystanders.Files) > 0 {
			cases[s.runbook]["bystander"] = true
		}
		if s.Case != caseHealthy && s.Case != caseUnknown && len(s.Expect.Changes)+len(s.Expect.Findings) == 0 {
			t.Errorf("%s/%s: a %s scenario must expect a change or a finding", s.runbook, s.name, s.Case)
		}
		if _, err := os.Stat(filepath.Join(s.dir, "plan.golden")); err != nil && !*updateGolden {
			t.Errorf("%s/%s: no plan.golden (run with -update)", s.runbook, s.name)
		}
	}
	for rb, c := range cases {
		for _, want := range []string{caseHealthy, caseBroken, casePartly, "bystander"} {
			if !c[want] {
				t.Errorf("%s: no %s scenario", rb, want)
			}
		}
	}
}

// senv is the shared testbed plus what one scenario seeded.
type senv struct {
	t       *testing.T
	tb      *testbed.Testbed
	k       *kenv
	roles   map[string]*testbed.Node
	names   map[string]string // node name -> role
	created []objRef
	snap    map[string]map[string]fileState // role -> node path -> state at start
}

type fileState struct {
	data []byte
	mode fs.FileMode
}

// resetDirs are the node paths scenarios and runbooks change; they are put
// back as they were after every scenario.
var resetDirs = []string{"/etc/logrotate.d", "/etc/default", "/boot", "/etc/kubernetes", testbed.StateDir + "/units"}

var resetFiles = []string{"/proc/cmdline"}

// TestScenarios runs every scenario against one testbed, one after another.
func TestScenarios(t *testing.T) {
	all := loadScenarios(t)
	if f := os.Getenv("NKSRUN_SCENARIO"); f != "" {
		var keep []*scenario
		for _, s := range all {
			if strings.Contains(s.runbook+"/"+s.name, f) {
				keep = append(keep, s)
			}
		}
		all = keep
	}
	var specs []testbed.NodeSpec
	for _, r := range scenarioRoles {
		s := r.spec
		// The logrotate runbook looks for kubelet's config in
		// /etc/kubernetes: scenarios need that directory per node.
		s.Files = map[string]string{"/etc/kubernetes/.testbed": ""}
		specs = append(specs, s)
	}
	tb := testbed.New(t, testbed.Options{Nodes: specs, RebootDelay: 300 * time.Millisecond})
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(tb.Client.Discovery()))
	e := &senv{tb: tb, roles: map[string]*testbed.Node{}, names: map[string]string{}, snap: map[string]map[string]fileState{}}
	e.k = &kenv{tb: tb, c: &module.Cluster{Clientset: tb.Client, Dynamic: tb.Dynamic, Mapper: mapper}, all: &bytes.Buffer{}}
	for i, r := range scenarioRoles {
		n := tb.Nodes[i]
		e.roles[r.role] = n
		e.names[n.Name] = r.role
		e.snap[r.role] = snapshotNode(t, n)
	}
	for _, s := range all {
		t.Run(s.runbook+"/"+s.name, func(t *testing.T) {
			e.t = t
			e.k.t = t
			e.k.dir = t.TempDir()
			defer e.reset()
			e.run(s)
		})
	}
}

func snapshotNode(t *testing.T, n *testbed.Node) map[string]fileState {
	out := map[string]fileState{}
	for _, d := range resetDirs {
		filepath.WalkDir(n.Path(d), func(p string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := de.Info()
			out[strings.TrimPrefix(p, n.Root)] = fileState{b, fi.Mode().Perm()}
			return nil
		})
	}
	for _, f := range resetFiles {
		b, _ := os.ReadFile(n.Path(f))
		out[f] = fileState{b, 0o444}
	}
	return out
}

// reset deletes what the scenario created and puts the nodes back.
func (e *senv) reset() {
	ctx := context.Background()
	for i := len(e.created) - 1; i >= 0; i-- {
		o := e.created[i]
		ri := e.k.res(o.APIVersion, o.Kind, o.Namespace)
		if cur, err := ri.Get(ctx, o.Name, metav1.GetOptions{}); err == nil && len(cur.GetFinalizers()) > 0 {
			cur.SetFinalizers(nil)
			ri.Update(ctx, cur, metav1.UpdateOptions{})
		}
		if err := ri.Delete(ctx, o.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			e.t.Errorf("reset: delete %s: %v", o, err)
		}
	}
	e.created = nil
	for role, n := range e.roles {
		snap := e.snap[role]
		for _, d := range resetDirs {
			filepath.WalkDir(n.Path(d), func(p string, de fs.DirEntry, err error) error {
				if err == nil && !de.IsDir() {
					if _, ok := snap[strings.TrimPrefix(p, n.Root)]; !ok {
						os.Remove(p)
					}
				}
				return nil
			})
		}
		for p, st := range snap {
			// In place: /proc/cmdline is a bind-mounted file.
			if cur, err := os.ReadFile(n.Path(p)); err == nil && bytes.Equal(cur, st.data) {
				continue
			}
			os.MkdirAll(filepath.Dir(n.Path(p)), 0o755)
			if err := os.WriteFile(n.Path(p), st.data, st.mode); err != nil {
				e.t.Errorf("reset %s:%s: %v", role, p, err)
			}
			os.Chmod(n.Path(p), st.mode)
		}
		spec := scenarioRoles[roleIndex(role)].spec
		node, err := e.tb.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			e.t.Errorf("reset: %v", err)
			continue
		}
		if node.Spec.Unschedulable {
			e.tb.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, []byte(`{"spec":{"unschedulable":false}}`), metav1.PatchOptions{})
		}
		if node.Status.NodeInfo.KernelVersion != spec.Kernel {
			e.setKernel(n, spec.Kernel)
		}
	}
}

func (e *senv) setKernel(n *testbed.Node, kernel string) {
	patch := fmt.Sprintf(`{"status":{"nodeInfo":{"kernelVersion":%q}}}`, kernel)
	if _, err := e.tb.Client.CoreV1().Nodes().Patch(context.Background(), n.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
		e.t.Fatalf("kernel of %s: %v", n.Name, err)
	}
}

// seed creates the scenario's objects and node state.
func (e *senv) seed(s *scenario) []objRef {
	ctx := context.Background()
	var seeded []objRef
	if b, err := os.ReadFile(filepath.Join(s.dir, "objects.yaml")); err == nil {
		// <role> stands for that node's (random) name.
		text := string(b)
		for name, role := range e.names {
			text = strings.ReplaceAll(text, "<"+role+">", name)
		}
		for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(text, -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var m map[string]any
			if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
				e.t.Fatalf("%s/objects.yaml: %v\n%s", s.dir, err, doc)
			}
			if m == nil {
				continue
			}
			u := &unstructured.Unstructured{Object: m}
			ref := objRef{u.GetAPIVersion(), u.GetKind(), u.GetNamespace(), u.GetName()}
			if ns := u.GetNamespace(); ns != "" {
				e.ensureNamespace(ns)
			}
			if ref.Kind == "Namespace" {
				e.ensureNamespace(ref.Name)
				continue
			}
			st, hasStatus := m["status"]
			ri := e.k.res(ref.APIVersion, ref.Kind, ref.Namespace)
			obj, err := ri.Create(ctx, u, metav1.CreateOptions{})
			if err != nil {
				e.t.Fatalf("create %s: %v", ref, err)
			}
			e.created = append(e.created, ref)
			if hasStatus && ref.Kind != "Event" {
				obj.Object["status"] = st
				if _, err := ri.UpdateStatus(ctx, obj, metav1.UpdateOptions{}); err != nil {
					e.t.Fatalf("status of %s: %v", ref, err)
				}
			}
			seeded = append(seeded, ref)
		}
	}
	roles := make([]string, 0, len(s.Nodes))
	for r := range s.Nodes {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	for _, role := range roles {
		ns, n := s.Nodes[role], e.roles[role]
		for p, c := range ns.Files {
			if err := os.MkdirAll(filepath.Dir(n.Path(p)), 0o755); err != nil {
				e.t.Fatal(err)
			}
			if err := os.WriteFile(n.Path(p), []byte(c), 0o644); err != nil {
				e.t.Fatalf("%s:%s: %v (a node's own directories: testdata/testbed/README.md)", role, p, err)
			}
		}
		for _, p := range ns.Remove {
			os.Remove(n.Path(p))
		}
		for u, st := range ns.Units {
			p := n.Path(testbed.StateDir + "/units/" + u)
			if st == "absent" {
				os.Remove(p)
				continue
			}
			if err := os.WriteFile(p, []byte(st+"\n"), 0o644); err != nil {
				e.t.Fatal(err)
			}
		}
		if ns.Cmdline != nil {
			if err := os.WriteFile(n.Path("/proc/cmdline"), []byte(*ns.Cmdline+"\n"), 0o444); err != nil {
				e.t.Fatal(err)
			}
		}
		if ns.Kernel != "" {
			e.setKernel(n, ns.Kernel)
		}
		for _, c := range ns.Run {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			out, errs, err := n.SSH(ctx, "sudo -n sh -c "+shq(c))
			cancel()
			if err != nil {
				e.t.Fatalf("%s: %s: %v\n%s%s", role, c, err, out, errs)
			}
		}
	}
	return seeded
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func (e *senv) ensureNamespace(ns string) {
	ctx := context.Background()
	_, err := e.tb.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		// Never deleted: the testbed has no namespace controller.
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
		_, err = e.k.res("v1", "Namespace", "").Create(ctx, u, metav1.CreateOptions{})
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		e.t.Fatalf("namespace %s: %v", ns, err)
	}
}

// state is what must not change: resourceVersions and file hashes.
func (e *senv) state(objs []objRef, files []nodeFile) map[string]string {
	out := map[string]string{}
	for _, o := range objs {
		cur, err := e.k.res(o.APIVersion, o.Kind, o.Namespace).Get(context.Background(), o.Name, metav1.GetOptions{})
		if err != nil {
			out[o.String()] = "error: " + err.Error()
			continue
		}
		out[o.String()] = cur.GetResourceVersion()
	}
	for _, f := range files {
		b, err := os.ReadFile(e.roles[f.Node].Path(f.Path))
		h := sha256.Sum256(b)
		out[f.Node+":"+f.Path] = hex.EncodeToString(h[:8])
		if err != nil {
			out[f.Node+":"+f.Path] = "absent"
		}
	}
	return out
}

// allFiles is every file under the reset directories of every node.
func (e *senv) allFiles() []nodeFile {
	var out []nodeFile
	for _, r := range scenarioRoles {
		n := e.roles[r.role]
		for _, d := range resetDirs {
			filepath.WalkDir(n.Path(d), func(p string, de fs.DirEntry, err error) error {
				if err == nil && !de.IsDir() {
					out = append(out, nodeFile{r.role, strings.TrimPrefix(p, n.Root)})
				}
				return nil
			})
		}
		out = append(out, nodeFile{r.role, "/proc/cmdline"})
	}
	return out
}

// nksrun runs the CLI against the testbed.
func (e *senv) nksrun(args ...string) (string, string, int) {
	e.t.Helper()
	full := []string{args[0], "--kubeconfig", e.tb.Kubeconfig, "-i", e.tb.KeyPath, "--known-hosts", e.tb.KnownHosts}
	if args[0] == "apply" {
		full = append(full, "--auto-approve", "--lock-file", filepath.Join(e.k.dir, "apply.lock"))
	}
	full = append(full, args[1:]...)
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code := runNksrun(ctx, full, &out, &errb)
	e.k.all.Write(out.Bytes())
	e.k.all.Write(errb.Bytes())
	return out.String(), errb.String(), code
}

func (e *senv) plan(s *scenario, format string) (string, int) {
	args := []string{"plan", "--format", format}
	for _, kv := range s.Set {
		args = append(args, "--set", kv)
	}
	out, errs, code := e.nksrun(append(args, s.runbook+".yaml")...)
	if code != 0 {
		// The failing targets' reasons, not the whole plan.
		reasons := regexp.MustCompile(`(?m)^.*"reason": .*$|^.*(failed|unreachable).*$`).FindAllString(out, 20)
		e.t.Fatalf("plan: exit %d\n%s\n%s", code, strings.Join(reasons, "\n"), nbTail(errs))
	}
	return out, code
}

func (e *senv) planJSON(s *scenario) *plans.Plan {
	out, _ := e.plan(s, "json")
	var p plans.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		e.t.Fatalf("plan JSON: %v\n%s", err, out)
	}
	return &p
}

// stepKey names a step by target role ("cluster" or the node's role).
func (e *senv) stepKey(tp plans.TargetPlan, id string) string {
	if tp.Kind == plans.TargetCluster {
		return "cluster/" + id
	}
	if r, ok := e.names[tp.Name]; ok {
		return r + "/" + id
	}
	return tp.Name + "/" + id
}

// normalise makes a text plan stable: node names and addresses by role,
// no durations or times.
func (e *senv) normalise(s string) string {
	for name, role := range e.names {
		s = strings.ReplaceAll(s, name, "<"+role+">")
		s = strings.ReplaceAll(s, e.roles[role].Address, "<"+role+"-address>")
	}
	s = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`).ReplaceAllString(s, "<time>")
	s = regexp.MustCompile(`\b\d+(\.\d+)?(ms|µs|s)\b`).ReplaceAllString(s, "<duration>")
	s = regexp.MustCompile(`\.nksrun-\d{14}\.bak`).ReplaceAllString(s, ".nksrun-<time>.bak")
	s = regexp.MustCompile(`resourceVersion[":= ]+\d+`).ReplaceAllString(s, "resourceVersion <rv>")
	s = regexp.MustCompile(`(checksum) [0-9a-f]{64}`).ReplaceAllString(s, "$1 <checksum>")
	s = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`).ReplaceAllString(s, "<uid>")
	return s
}

func (e *senv) run(s *scenario) {
	t := e.t
	t.Logf("%s (%s): %s", s.runbook, s.Case, strings.TrimSpace(s.Description))
	seeded := e.seed(s)
	objs, files := s.Bystanders.Objects, s.Bystanders.Files
	if s.Case == caseHealthy {
		objs, files = append(objs, seeded...), append(files, e.allFiles()...)
	}
	before := e.state(objs, files)

	// Plan: the text view against the golden, the JSON view for the checks.
	text, _ := e.plan(s, "text")
	golden := filepath.Join(s.dir, "plan.golden")
	got := e.normalise(text)
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if want, err := os.ReadFile(golden); err != nil || string(want) != got {
		t.Errorf("plan differs from %s (go test -run TestScenarios -update):\n--- want\n%s\n--- got\n%s", golden, want, got)
	}
	for _, ev := range s.Expect.Evidence {
		if !strings.Contains(got, ev) {
			t.Errorf("plan does not show %q", ev)
		}
	}
	for _, ev := range s.Expect.Absent {
		if strings.Contains(got, ev) {
			t.Errorf("plan shows %q", ev)
		}
	}
	p := e.planJSON(s)
	changes, findings, unknown := e.actions(p)
	wantChanges := s.Expect.Changes
	if s.Case == caseHealthy {
		wantChanges = nil
	}
	if g, w := strings.Join(changes, " "), strings.Join(sorted(wantChanges), " "); g != w {
		t.Errorf("plan changes [%s], want [%s]", g, w)
	}
	if g, w := strings.Join(keys(findings), " "), strings.Join(sorted(s.Expect.Findings), " "); g != w {
		t.Errorf("plan findings [%s], want [%s]", g, w)
	}
	wantUnknown := map[string]bool{}
	for k, why := range s.Expect.Unknown {
		wantUnknown[k] = true
		if r, ok := unknown[k]; !ok || !strings.Contains(r, why) {
			t.Errorf("%s: want unknown with %q, got %q (present %v)", k, why, r, ok)
		}
	}
	for k, r := range unknown {
		if !wantUnknown[k] {
			t.Errorf("%s: unexpected unknown: %s", k, r)
		}
	}
	// doctor condenses the same plan into one row: not found / not
	// applicable exactly when healthy.
	e.checkDoctor(s)
	if s.Case == caseUnknown {
		if len(unknown) == 0 && len(findings) == 0 {
			t.Errorf("an unknown scenario must not plan as healthy")
		}
		e.checkUnchanged(before, objs, files)
		return
	}

	// Apply, then the effect: verify passes, nothing left to do.
	args := []string{"apply", "--format", "json"}
	for _, kv := range s.Set {
		args = append(args, "--set", kv)
	}
	out, errs, code := e.nksrun(append(args, s.runbook+".yaml")...)
	var rep plans.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("apply JSON (exit %d): %v\n%s\n%s", code, err, out, errs)
	}
	if code != 0 {
		t.Errorf("apply exit %d\n%s", code, nbTail(errs))
	}
	nverify := 0
	for _, tr := range rep.Targets {
		if tr.Status == plans.StatusFailed || tr.Status == plans.StatusUnreachable {
			t.Errorf("apply %s: %s %s", tr.Name, tr.Status, tr.Reason)
		}
		for _, v := range tr.Verify {
			nverify++
			if !v.OK {
				t.Errorf("verify on %s failed: %s %s", tr.Name, v.Message, v.Error)
			}
		}
		if s.Case == caseHealthy && tr.Status == plans.StatusChanged {
			t.Errorf("apply changed %s on a healthy cluster", tr.Name)
		}
	}
	if nverify == 0 && len(e.mustRunbookVerify(s)) > 0 {
		t.Errorf("apply ran no verify")
	}
	p2 := e.planJSON(s)
	if c2, f2, u2 := e.actions(p2); len(c2)+len(u2) > 0 || (s.Case == caseHealthy && len(f2) > 0) {
		t.Errorf("plan after apply: changes %v, findings %v, unknown %v", c2, keys(f2), keys(u2))
	}
	e.checkUnchanged(before, objs, files)
}

func (e *senv) checkDoctor(s *scenario) {
	args := []string{"doctor", "--format", "json"}
	for _, kv := range s.Set {
		args = append(args, "--set", kv)
	}
	out, errs, code := e.nksrun(append(args, s.runbook+".yaml")...)
	var rows []doctorRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil || code != 0 || len(rows) != 1 {
		e.t.Fatalf("doctor: exit %d, %v\n%s\n%s", code, err, out, nbTail(errs))
	}
	healthy := rows[0].Status == "not found" || rows[0].Status == "not applicable"
	if healthy != (s.Case == caseHealthy) {
		e.t.Errorf("doctor row %q on a %s scenario: %v", rows[0].Status, s.Case, rows[0].Evidence)
	}
}

// mustRunbookVerify is the runbook's verify list (diagnose-only runbooks have none).
func (e *senv) mustRunbookVerify(s *scenario) []string {
	rb := loadRB(e.t, s.runbook)
	var out []string
	for _, v := range rb.Verify {
		out = append(out, v.Message)
	}
	return out
}

func (e *senv) checkUnchanged(before map[string]string, objs []objRef, files []nodeFile) {
	after := e.state(objs, files)
	for k, v := range before {
		if after[k] != v {
			e.t.Errorf("bystander %s changed (%s → %s)", k, v, after[k])
		}
	}
}

// actions lists the plan's changing steps (sorted), findings and unknowns by step key.
func (e *senv) actions(p *plans.Plan) (changes []string, findings, unknown map[string]string) {
	findings, unknown = map[string]string{}, map[string]string{}
	for _, rp := range p.Runbooks {
		for _, tp := range rp.Targets {
			if tp.Status == plans.StatusFailed || tp.Status == plans.StatusUnreachable {
				e.t.Errorf("plan: %s %s: %s", tp.Name, tp.Status, tp.Reason)
			}
			for _, st := range tp.Steps {
				k := e.stepKey(tp, st.ID)
				switch st.Action {
				case module.Change:
					changes = append(changes, k)
				case module.Unknown:
					unknown[k] = st.Summary + " " + st.Reason
				}
				if len(st.Findings) > 0 {
					findings[k] = st.Findings[0].Title
				}
			}
		}
	}
	sort.Strings(changes)
	return changes, findings, unknown
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
