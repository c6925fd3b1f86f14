package modules

import (
	"go/build"
	"reflect"
	"strings"
	"testing"

	"nksrun/engine/module"
)

// talksToAPI reports whether a module's package (or a helper package of
// this tree that it imports) imports the Kubernetes client libraries.
func talksToAPI(t *testing.T, pkg string, seen map[string]bool) bool {
	if seen[pkg] {
		return false
	}
	seen[pkg] = true
	p, err := build.Import(pkg, ".", 0)
	if err != nil {
		t.Fatalf("reading package %s: %v", pkg, err)
	}
	for _, imp := range p.Imports {
		switch {
		case strings.HasPrefix(imp, "k8s.io/client-go"), strings.HasPrefix(imp, "k8s.io/api/"):
			return true
		case strings.HasPrefix(imp, "nksrun/modules/") && talksToAPI(t, imp, seen):
			return true
		}
	}
	return false
}

// TestAPIModulesDeclareRBAC: a module whose code can call the Kubernetes
// API must say which RBAC rules its steps need (module.APIUser), so the
// CronJob that `nksrun cron --kubernetes` emits can do its job; one that
// works over SSH only must not pretend to.
func TestAPIModulesDeclareRBAC(t *testing.T) {
	apiModules := 0
	for name, f := range Registry() {
		m := f()
		// The module is an adapter (module.Adapt) defined in engine/module;
		// its Params type is declared in the module's own package.
		typ := reflect.TypeOf(m.NewParams())
		if typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		usesAPI := talksToAPI(t, typ.PkgPath(), map[string]bool{})
		_, declares := m.(module.APIUser)
		if usesAPI {
			apiModules++
		}
		switch {
		case usesAPI && !declares:
			t.Errorf("module %s (%s) uses the Kubernetes API but declares no RBAC rules (implement module.APIUser)", name, typ.PkgPath())
		case !usesAPI && declares:
			t.Errorf("module %s (%s) declares RBAC rules but never calls the Kubernetes API", name, typ.PkgPath())
		case usesAPI:
			rules, err := m.(module.APIUser).RBAC(m.NewParams())
			if err == nil && len(rules) == 0 && name != "pull_secret" {
				t.Errorf("module %s declares no rule for default parameters", name)
			}
		}
	}
	if apiModules < 5 {
		t.Errorf("found %d modules that use the API, want at least 5 (k8s_patch, set_image, rollout_restart, pull_secret, reboot): is the import scan broken?", apiModules)
	}
}
