package module

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// Resource resolves apiVersion+kind to a dynamic client, namespaced to ns
// when the kind is namespaced and ns is not empty. The engine (Kubernetes
// facts) and the modules resolve kinds the same way through it.
func (c *Cluster) Resource(apiVersion, kind, ns string) (dynamic.ResourceInterface, error) {
	if c == nil || c.Dynamic == nil || c.Mapper == nil {
		return nil, errors.New("no cluster configured (--kubeconfig)")
	}
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, fmt.Errorf("apiVersion %q: %w", apiVersion, err)
	}
	m, err := c.Mapper.RESTMapping(schema.GroupKind{Group: gv.Group, Kind: kind}, gv.Version)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", apiVersion, kind, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace && ns != "" {
		return c.Dynamic.Resource(m.Resource).Namespace(ns), nil
	}
	return c.Dynamic.Resource(m.Resource), nil
}
