package runbooks_test

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"nksrun/engine/module"
)

func e2eCalico328Scale(k *kenv) {
	kc := func(tag string) {
		k.create(workload("Deployment", "kube-system", "calico-kube-controllers", "", "containers: [{name: calico-kube-controllers, image: calico/kube-controllers:"+tag+"}]\n"))
	}
	del := func() {
		ctx := context.Background()
		k.res("apps/v1", "DaemonSet", "kube-system").Delete(ctx, "calico-node", metav1.DeleteOptions{})
		k.res("apps/v1", "Deployment", "kube-system").Delete(ctx, "calico-kube-controllers", metav1.DeleteOptions{})
	}
	for _, tc := range []struct {
		tag, bpf string
		found    bool
	}{
		{"v3.28.0", "true", true},
		{"v3.28.1", "true", true},
		{"v3.28.2", "true", false},
		{"v3.29.1", "true", false},
		{"v3.26.4", "true", false},
		{"v3.28.0", "false", false},
	} {
		calicoNode(k, tc.tag, "- {name: FELIX_BPFENABLED, value: \""+tc.bpf+"\"}\n")
		kc(tc.tag)
		_, p := k.plan("calico-328-scale")
		want := module.NoOp
		if tc.found {
			want = module.Finding
		}
		wantActions(k, p, map[string]module.Action{"diagnose": want})
		if c := p.Counts(); c.Change != 0 {
			k.t.Errorf("diagnose-only runbook plans changes: %+v", c)
		}
		del()
	}
}
