package cli

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"nksrun/engine/module"
)

// Client-side rate limits. client-go's defaults (5 QPS, burst 10) make a
// 200-node run crawl; the API server applies its own fairness.
const (
	kubeQPS   = 100
	kubeBurst = 200
)

// errNoCluster means no kubeconfig could be found (not an error with
// --inventory).
var errNoCluster = errors.New("no cluster configured")

// connectCluster builds clients from --kubeconfig, $KUBECONFIG,
// ~/.kube/config (in that order, as kubectl does), or the in-cluster config
// when running in a pod.
func connectCluster(kubeconfig, context string) (*module.Cluster, error) {
	cfg, err := restConfig(kubeconfig, context)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = kubeQPS, kubeBurst
	cfg.UserAgent = "nksrun/" + version()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))
	c := &module.Cluster{Clientset: cs, Dynamic: dyn, Mapper: mapper}
	lastCluster.Store(c)
	return c, nil
}

func restConfig(kubeconfig, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: context}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err == nil {
		return cfg, nil
	}
	if kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		if ic, icErr := rest.InClusterConfig(); icErr == nil {
			return ic, nil
		}
	}
	if clientcmd.IsEmptyConfig(err) {
		return nil, fmt.Errorf("%w: pass --kubeconfig, set $KUBECONFIG or create ~/.kube/config (or use --inventory FILE)", errNoCluster)
	}
	return nil, fmt.Errorf("kubeconfig: %w", err)
}
