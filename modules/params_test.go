package modules

import (
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"nksrun/engine/module"
	"nksrun/engine/strictyaml"
	"nksrun/modules/filesync"
	"nksrun/modules/grubarg"
	"nksrun/modules/k8spatch"
	"nksrun/modules/pullsecret"
	"nksrun/modules/reboot"
	"nksrun/modules/report"
	"nksrun/modules/rolloutrestart"
	"nksrun/modules/setimage"
	"nksrun/modules/systemdrestart"
)

func ptr[T any](v T) *T { return &v }

// populated is one value per module with every parameter set (the tricky
// values where a parameter can hold them), as evaluated params are before
// they go into a plan file.
var populated = map[string]any{
	"file_sync": &filesync.Params{Dest: "/etc/logrotate.d/x", Src: "files/x", Content: ptr("\n  indented: yes\n\ttab 0644 \r\n"), Mode: "0644", Owner: "root", Group: "on",
		Backup: true, Validate: "logrotate -d %s", Sensitive: true},
	"report": &report.Params{Found: true, Severity: "critical", Title: "yes", Evidence: []string{"0644", "no", "", "null", "재부팅 필요"}, Recommendation: "run `x`", Unknown: "~"},
	"k8s_patch": &k8spatch.Params{APIVersion: "v1", Kind: "ConfigMap", Namespace: "kube-system", Name: "n", Names: &[]string{}, LabelSelector: "a=b,c in (d)",
		Type: "merge", Patch: map[string]any{
			"metadata": map[string]any{"annotations": map[string]any{"a": "0644", "gone": nil, "on": "yes"}, "finalizers": []any{}},
			"data":     map[string]any{"n": 3, "f": 1.5, "whole": 2.0, "big": uint64(math.MaxUint64), "neg": math.MinInt64, "t": true},
			"list":     []any{nil, "x", []any{1}, map[string]any{}},
		},
		INI: &k8spatch.INIEdit{Key: "cloud.conf", Section: "Global", Set: map[string]string{"use-octavia": "true", "x": "0"}, Unset: []string{"old"}, Bool: true},
		Env: []k8spatch.EnvEdit{{Container: "c", Set: map[string]string{"A": "1", "B": "yes"}, Unset: []string{"C"}}}, RemoveFinalizers: true},
	"set_image": &setimage.Params{Kind: "Deployment", Namespace: "ns", Name: "n", LabelSelector: "app=x",
		Containers: map[string]string{"app": "ghcr.io/o/i:1.0", "init": "i@sha256:00"},
		Rules:      []setimage.Rule{{From: "docker.pkg.github.com/(.*)", To: "ghcr.io/$1", Regex: true}, {From: "a", To: "b"}}},
	"rollout_restart": &rolloutrestart.Params{Kind: "DaemonSet", Namespace: "kube-system", Name: "n", Names: &[]string{"a", "b"}, LabelSelector: "k8s-app=x", Wait: true, Timeout: "5m"},
	"pull_secret": &pullsecret.Params{Namespaces: []string{"default", "on"}, ServiceAccounts: []string{"ns/sa"}, SecretName: "dockerhub-pull", Server: "https://index.docker.io/v1/",
		ServiceAccount: "default", CredentialsFile: "creds.json", UsernameEnv: "U", PasswordEnv: "P"},
	"grub_arg":        &grubarg.Params{Arg: "cgroup.memory=nokmem", State: "absent", Variable: "GRUB_CMDLINE_LINUX", File: "/etc/default/grub", GrubCfg: "/boot/grub2/grub.cfg", Regenerate: "grub2-mkconfig -o %s"},
	"reboot":          &reboot.Params{Serial: 2, Command: "reboot", Force: true, DeleteEmptyDirData: true, DrainTimeout: 300, EvictRetry: 5, RebootTimeout: 600, ReadyTimeout: 300, LockTimeout: 3600, LockNamespace: "kube-system", LockName: "nksrun-reboot", LeaseDuration: 60, HaltHold: 86400, MaxFailures: math.MaxInt64, Reason: "kernel: 5.4"},
	"systemd_restart": &systemdrestart.Params{Units: []string{"rpcbind.service", "rpc-statd"}, Always: true, Wait: 30},
}

// TestParamsThroughPlanFile: every module's parameters come back from a
// plan file's JSON exactly as they went in, under the names runbooks use.
func TestParamsThroughPlanFile(t *testing.T) {
	reg := Registry()
	for name, f := range reg {
		t.Run(name, func(t *testing.T) {
			in, ok := populated[name]
			if !ok {
				t.Fatalf("no populated params for module %s: add one", name)
			}
			mod := f()
			if got, want := reflect.TypeOf(in), reflect.TypeOf(mod.NewParams()); got != want {
				t.Fatalf("populated params are %v, the module's %v", got, want)
			}
			raw, err := module.ParamsToJSON(in)
			if err != nil {
				t.Fatal(err)
			}
			back := mod.NewParams()
			if err := module.ParamsFromJSON(raw, back); err != nil {
				t.Fatalf("%s: %v", raw, err)
			}
			if !reflect.DeepEqual(back, in) {
				t.Errorf("round trip through %s\n got %#v\nwant %#v", raw, back, in)
			}
			// Every parameter is set, so every yaml name is a key.
			var top map[string]any
			if err := yaml.Unmarshal(raw, &top); err != nil {
				t.Fatal(err)
			}
			var keys, names []string
			for k := range top {
				keys = append(keys, k)
			}
			for _, f := range strictyaml.Fields(reflect.TypeOf(in).Elem()) {
				names = append(names, f.Name)
			}
			sort.Strings(keys)
			sort.Strings(names)
			if !reflect.DeepEqual(keys, names) {
				t.Errorf("plan keys %v, yaml names %v", keys, names)
			}
		})
	}
	for name := range populated {
		if _, ok := reg[name]; !ok {
			t.Errorf("populated params for %s, which is not a module", name)
		}
	}
}

// TestParamsHaveOneTagSet: parameter names are the yaml tags alone; a json
// tag would be a second name nothing reads.
func TestParamsHaveOneTagSet(t *testing.T) {
	var check func(t *testing.T, typ reflect.Type, seen map[reflect.Type]bool)
	check = func(t *testing.T, typ reflect.Type, seen map[reflect.Type]bool) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] {
			return
		}
		seen[typ] = true
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			if _, ok := f.Tag.Lookup("json"); ok {
				t.Errorf("%v.%s has a json tag (%s): params are named by their yaml tags only", typ, f.Name, f.Tag)
			}
			if f.IsExported() && !strings.Contains(string(f.Tag), `yaml:"`) {
				t.Errorf("%v.%s has no yaml tag", typ, f.Name)
			}
			check(t, f.Type, seen)
		}
	}
	for name, f := range Registry() {
		t.Run(name, func(t *testing.T) { check(t, reflect.TypeOf(f().NewParams()), map[reflect.Type]bool{}) })
	}
}
