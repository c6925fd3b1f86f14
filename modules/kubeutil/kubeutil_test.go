package kubeutil

import (
	"encoding/base64"
	"nksrun/testdata/golden"
	"strings"
	"testing"
)

func TestSecretDiffIsRedacted(t *testing.T) {
	oldDoc := "[Global]\npassword=Sup3rS3cret!\n"
	newDoc := oldDoc + "\n[BlockStorage]\nrescan-on-resize=true\n"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	mk := func(doc string, rv string) map[string]any {
		return map[string]any{
			"apiVersion": "v1", "kind": "Secret",
			"metadata": map[string]any{
				"name": "cinder-csi-cloud-config", "namespace": "kube-system", "resourceVersion": rv,
				"managedFields": []any{map[string]any{"manager": "kubectl"}},
				"annotations":   map[string]any{"kubectl.kubernetes.io/last-applied-configuration": `{"data":{"cloud-config":"` + b64(oldDoc) + `"}}`},
			},
			"type": "Opaque",
			"data": map[string]any{"cloud-config": b64(doc), "ca.crt": b64("-----BEGIN CERTIFICATE-----")},
		}
	}
	d := DiffObjects(mk(oldDoc, "1"), mk(newDoc, "2"), true, "secret/kube-system/cinder-csi-cloud-config")
	for _, leak := range []string{"Sup3rS3cret", b64(oldDoc), b64(newDoc), "BEGIN CERT", "rescan-on-resize", "resourceVersion", "managedFields"} {
		if strings.Contains(d, leak) {
			t.Errorf("diff shows %q:\n%s", leak, d)
		}
	}
	if !strings.Contains(d, "cloud-config: (secret, 69 bytes, changed)") {
		t.Errorf("diff does not say the key changed:\n%s", d)
	}
	golden.Assert(t, "cinder-csi-rescan-secret-diff.golden", []byte(d))
	// A ConfigMap diff shows its data.
	cm := func(v string) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "c"}, "data": map[string]any{"k": v}}
	}
	if d := DiffObjects(cm("a"), cm("b"), false, "configmap/c"); !strings.Contains(d, "-  k: a") || !strings.Contains(d, "+  k: b") {
		t.Errorf("configmap diff:\n%s", d)
	}
}

func TestWithPrecondition(t *testing.T) {
	b, _, err := withPrecondition(&Patch{Type: JSONPatch, Body: []byte(`[{"op":"remove","path":"/metadata/finalizers"}]`)}, "42", true)
	if err != nil || string(b) != `[{"op":"test","path":"/metadata/resourceVersion","value":"42"},{"op":"remove","path":"/metadata/finalizers"}]` {
		t.Errorf("json: %s %v", b, err)
	}
	b, _, err = withPrecondition(&Patch{Type: MergePatch, Body: []byte(`{"spec":{"x":1}}`)}, "42", true)
	if err != nil || string(b) != `{"metadata":{"resourceVersion":"42"},"spec":{"x":1}}` {
		t.Errorf("merge: %s %v", b, err)
	}
	b, _, _ = withPrecondition(&Patch{Type: MergePatch, Body: []byte(`{"spec":{"x":1}}`)}, "42", false)
	if string(b) != `{"spec":{"x":1}}` {
		t.Errorf("unguarded: %s", b)
	}
}

type sink map[string]bool

func (s sink) AddSecret(v string)      { s[v] = true }
func (s sink) AddSecretWhole(v string) { s[v] = true }

func TestRegisterDocument(t *testing.T) {
	s := sink{}
	doc := "[Global]\nusername=nks-user\npassword=pw12\ntenant-id = 0123456789abcdef\n\n[BlockStorage]\nrescan-on-resize=true\nbs-version=v3\n-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUU0nR\n"
	RegisterDocument(s, doc)
	for _, want := range []string{doc, "nks-user", "pw12", "0123456789abcdef", "MIIBszCCAVmgAwIBAgIUU0nR"} {
		if !s[want] {
			t.Errorf("%q not registered", want)
		}
	}
	for _, public := range []string{"[BlockStorage]", "rescan-on-resize=true", "true", "v3", "[Global]"} {
		if s[public] {
			t.Errorf("%q registered: it would be redacted from every output", public)
		}
	}
}
