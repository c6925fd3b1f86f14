// Package pullsecret implements the pull_secret module: create or refresh a
// kubernetes.io/dockerconfigjson Secret in each target namespace and add it
// to the namespace's ServiceAccount (default: "default") imagePullSecrets.
//
// Credentials never appear in a runbook, a plan or any output: they are
// read from a file (a docker config.json) or from environment variables
// named by the runbook, at plan time (to know whether the Secret is current)
// and again at apply; every value is registered for redaction, and the plan
// holds only names and resourceVersions.
package pullsecret

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"nksrun/engine/module"
	"nksrun/modules/kubeutil"
)

// Params are pull_secret's parameters.
type Params struct {
	Namespaces     []string `yaml:"namespaces" json:"namespaces"`
	SecretName     string   `yaml:"secret_name" json:"secret_name,omitempty"`         // default dockerhub-pull
	Server         string   `yaml:"server" json:"server,omitempty"`                   // default https://index.docker.io/v1/
	ServiceAccount string   `yaml:"service_account" json:"service_account,omitempty"` // default "default"
	// CredentialsFile is a docker config.json (`{"auths": …}`, as written by
	// `docker login`) used as the Secret's content.
	CredentialsFile string `yaml:"credentials_file" json:"credentials_file,omitempty"`
	// UsernameEnv/PasswordEnv name environment variables holding the
	// credentials (the names, never the values, are in the runbook).
	UsernameEnv string `yaml:"username_env" json:"username_env,omitempty"`
	PasswordEnv string `yaml:"password_env" json:"password_env,omitempty"`
}

func (p *Params) defaults() {
	if p.SecretName == "" {
		p.SecretName = "dockerhub-pull"
	}
	if p.Server == "" {
		p.Server = "https://index.docker.io/v1/"
	}
	if p.ServiceAccount == "" {
		p.ServiceAccount = "default"
	}
}

// Module is pull_secret.
type Module struct{}

// New is the registry factory.
func New() module.Module { return Module{} }

var _ module.Module = Module{}

func (Module) Name() string        { return "pull_secret" }
func (Module) Scope() module.Scope { return module.ScopeCluster }

// Outputs are the keys later steps read as steps.<id>.<key>: the number of namespaces whose secret or service account changes.
func (Module) Outputs() []string { return []string{"count"} }

func (Module) NewParams() any { return &Params{} }

func (Module) Validate(p any) error {
	ps := p.(*Params)
	hasFile := ps.CredentialsFile != ""
	hasEnv := ps.UsernameEnv != "" || ps.PasswordEnv != ""
	if hasFile && hasEnv {
		return errors.New("give credentials_file or username_env+password_env, not both")
	}
	if hasEnv && (ps.UsernameEnv == "" || ps.PasswordEnv == "") {
		return errors.New("username_env and password_env go together")
	}
	return nil
}

func (Module) Probes(module.Target, module.Step) ([]module.Probe, error) { return nil, nil }

// dockerConfig reads the credentials and returns the Secret content.
func dockerConfig(t module.Target, ps *Params) ([]byte, error) {
	reg := func(v string) {
		if t.Secrets != nil {
			t.Secrets.AddSecret(v)
		}
	}
	switch {
	case ps.CredentialsFile != "":
		path := ps.CredentialsFile
		if !filepath.IsAbs(path) && t.RunbookDir != "" {
			path = filepath.Join(t.RunbookDir, path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("credentials file: %w", err)
		}
		if t.Secrets != nil {
			kubeutil.Whole(t.Secrets, string(b))
		}
		if !registerDockerConfig(t.Secrets, b) {
			return nil, fmt.Errorf("credentials file %s: not a docker config.json with \"auths\"", ps.CredentialsFile)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return nil, err
		}
		if t.Secrets != nil {
			kubeutil.Whole(t.Secrets, buf.String())
		}
		return buf.Bytes(), nil
	case ps.UsernameEnv != "":
		user, pass := os.Getenv(ps.UsernameEnv), os.Getenv(ps.PasswordEnv)
		if user == "" || pass == "" {
			return nil, fmt.Errorf("environment variables %s and %s must both be set", ps.UsernameEnv, ps.PasswordEnv)
		}
		reg(pass)
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		reg(auth)
		reg(user + ":" + pass)
		b, err := json.Marshal(map[string]any{"auths": map[string]any{ps.Server: map[string]string{"username": user, "password": pass, "auth": auth}}})
		if err != nil {
			return nil, err
		}
		if t.Secrets != nil {
			kubeutil.Whole(t.Secrets, string(b))
		}
		return b, nil
	}
	return nil, errors.New("no credentials given: set credentials_file, or username_env and password_env")
}

// nsPlan is one namespace's part of the plan (names and versions only).
type nsPlan struct {
	Namespace string `json:"namespace"`
	Secret    string `json:"secret"`             // create | update | ok
	SecretRV  string `json:"secretRV,omitempty"` // for update
	SA        string `json:"serviceAccount"`     // create | patch | ok
	SARV      string `json:"serviceAccountRV,omitempty"`
}

func (m Module) Plan(ctx context.Context, t module.Target, s module.Step, _ map[string]module.ProbeResult) (module.Planned, error) {
	ps := s.Params.(*Params)
	ps.defaults()
	nss := uniq(ps.Namespaces)
	if len(nss) == 0 {
		return module.Planned{Action: module.NoOp, Summary: "no target namespaces", Outputs: map[string]any{"count": 0}}, nil
	}
	if t.Cluster == nil || t.Cluster.Clientset == nil {
		return module.Planned{}, errors.New("no cluster configured (--kubeconfig)")
	}
	want, err := dockerConfig(t, ps)
	if err != nil {
		return module.Planned{}, err
	}
	cs := t.Cluster.Clientset
	var plans []nsPlan
	var diffs, parts []string
	fp := map[string]string{}
	for _, ns := range nss {
		np := nsPlan{Namespace: ns, Secret: "ok", SA: "ok"}
		sec, err := cs.CoreV1().Secrets(ns).Get(ctx, ps.SecretName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			np.Secret = "create"
			dry := desiredSecret(ns, ps.SecretName, want)
			if _, err := cs.CoreV1().Secrets(ns).Create(ctx, dry, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
				return module.Planned{}, fmt.Errorf("Secret %s/%s: dry run: %w", ns, ps.SecretName, err)
			}
			diffs = append(diffs, fmt.Sprintf("+ Secret %s/%s (type %s, key %s: (secret, %d bytes))\n", ns, ps.SecretName, corev1.SecretTypeDockerConfigJson, corev1.DockerConfigJsonKey, len(want)))
		case err != nil:
			return module.Planned{}, fmt.Errorf("Secret %s/%s: %w", ns, ps.SecretName, err)
		default:
			for _, v := range sec.Data {
				if t.Secrets != nil {
					kubeutil.Whole(t.Secrets, string(v))
					registerDockerConfig(t.Secrets, v)
				}
			}
			if sec.Type != corev1.SecretTypeDockerConfigJson {
				return module.Planned{}, fmt.Errorf("Secret %s/%s exists with type %s, not %s: rename secret_name or remove it", ns, ps.SecretName, sec.Type, corev1.SecretTypeDockerConfigJson)
			}
			if !bytes.Equal(sec.Data[corev1.DockerConfigJsonKey], want) {
				np.Secret, np.SecretRV = "update", sec.ResourceVersion
				fp["Secret "+ns+"/"+ps.SecretName] = sec.ResourceVersion
				diffs = append(diffs, fmt.Sprintf("~ Secret %s/%s key %s: (secret, %d bytes) → (secret, %d bytes, changed)\n", ns, ps.SecretName, corev1.DockerConfigJsonKey, len(sec.Data[corev1.DockerConfigJsonKey]), len(want)))
			}
		}
		sa, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, ps.ServiceAccount, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			np.SA = "create"
			diffs = append(diffs, fmt.Sprintf("+ ServiceAccount %s/%s (imagePullSecrets: [%s])\n", ns, ps.ServiceAccount, ps.SecretName))
		case err != nil:
			return module.Planned{}, fmt.Errorf("ServiceAccount %s/%s: %w", ns, ps.ServiceAccount, err)
		default:
			if !hasPullSecret(sa, ps.SecretName) {
				np.SA, np.SARV = "patch", sa.ResourceVersion
				fp["ServiceAccount "+ns+"/"+ps.ServiceAccount] = sa.ResourceVersion
				var names []string
				for _, r := range sa.ImagePullSecrets {
					names = append(names, r.Name)
				}
				diffs = append(diffs, fmt.Sprintf("~ ServiceAccount %s/%s imagePullSecrets: [%s] → [%s]\n", ns, ps.ServiceAccount, strings.Join(names, ", "), strings.Join(append(names, ps.SecretName), ", ")))
			}
		}
		if np.Secret != "ok" || np.SA != "ok" {
			plans = append(plans, np)
			var what []string
			if np.Secret != "ok" {
				what = append(what, np.Secret+" Secret "+ps.SecretName)
			}
			if np.SA != "ok" {
				what = append(what, map[string]string{"create": "create", "patch": "reference it from"}[np.SA]+" ServiceAccount "+ps.ServiceAccount)
			}
			parts = append(parts, ns+": "+strings.Join(what, ", "))
		}
	}
	if len(plans) == 0 {
		return module.Planned{Action: module.NoOp, Summary: fmt.Sprintf("pull secret %s current and referenced in %d namespace(s)", ps.SecretName, len(nss)), Outputs: map[string]any{"count": 0}}, nil
	}
	data, err := json.Marshal(plans)
	if err != nil {
		return module.Planned{}, err
	}
	return module.Planned{
		Action: module.Change, Summary: strings.Join(parts, "; "), Diff: strings.Join(diffs, ""),
		Fingerprint: fp, Data: data, Outputs: map[string]any{"count": len(plans)},
		Reason: "pods pull " + ps.Server + " images with the registry credentials instead of anonymously",
	}, nil
}

func (m Module) Apply(ctx context.Context, t module.Target, s module.Step, p module.Planned) (module.Applied, error) {
	ps := s.Params.(*Params)
	ps.defaults()
	var plans []nsPlan
	if err := json.Unmarshal(p.Data, &plans); err != nil {
		return module.Applied{}, fmt.Errorf("plan data: %w", err)
	}
	want, err := dockerConfig(t, ps)
	if err != nil {
		return module.Applied{}, err
	}
	cs := t.Cluster.Clientset
	changed := 0
	conflict := func(what string, err error) error {
		if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) || apierrors.IsInvalid(err) {
			return fmt.Errorf("%s changed since the plan (%v): %w", what, err, module.ErrConflict)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, np := range plans {
		secName := "Secret " + np.Namespace + "/" + ps.SecretName
		switch np.Secret {
		case "create":
			if _, err := cs.CoreV1().Secrets(np.Namespace).Create(ctx, desiredSecret(np.Namespace, ps.SecretName, want), metav1.CreateOptions{}); err != nil {
				return module.Applied{Changed: changed > 0}, conflict(secName, err)
			}
			changed++
		case "update":
			sec := desiredSecret(np.Namespace, ps.SecretName, want)
			sec.ResourceVersion = np.SecretRV
			// Update with the planned resourceVersion: 409 if it moved.
			cur, err := cs.CoreV1().Secrets(np.Namespace).Get(ctx, ps.SecretName, metav1.GetOptions{})
			if err != nil {
				return module.Applied{Changed: changed > 0}, conflict(secName, err)
			}
			for _, v := range cur.Data {
				if t.Secrets != nil {
					kubeutil.Whole(t.Secrets, string(v))
				}
			}
			sec.Labels, sec.Annotations = cur.Labels, cur.Annotations
			if _, err := cs.CoreV1().Secrets(np.Namespace).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
				return module.Applied{Changed: changed > 0}, conflict(secName, err)
			}
			changed++
		}
		saName := "ServiceAccount " + np.Namespace + "/" + ps.ServiceAccount
		switch np.SA {
		case "create":
			sa := &corev1.ServiceAccount{
				ObjectMeta:       metav1.ObjectMeta{Name: ps.ServiceAccount, Namespace: np.Namespace},
				ImagePullSecrets: []corev1.LocalObjectReference{{Name: ps.SecretName}},
			}
			if _, err := cs.CoreV1().ServiceAccounts(np.Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
				return module.Applied{Changed: changed > 0}, conflict(saName, err)
			}
			changed++
		case "patch":
			ops := []kubeutil.Op{{Op: "test", Path: "/metadata/resourceVersion", Value: np.SARV}}
			ops = append(ops, kubeutil.Op{Op: "add", Path: "/imagePullSecrets/-", Value: map[string]string{"name": ps.SecretName}})
			sa, err := cs.CoreV1().ServiceAccounts(np.Namespace).Get(ctx, ps.ServiceAccount, metav1.GetOptions{})
			if err != nil {
				return module.Applied{Changed: changed > 0}, conflict(saName, err)
			}
			if sa.ResourceVersion != np.SARV {
				return module.Applied{Changed: changed > 0}, fmt.Errorf("%s: resourceVersion %s at plan, %s now: %w", saName, np.SARV, sa.ResourceVersion, module.ErrConflict)
			}
			if len(sa.ImagePullSecrets) == 0 {
				ops[1] = kubeutil.Op{Op: "add", Path: "/imagePullSecrets", Value: []map[string]string{{"name": ps.SecretName}}}
			}
			body, _ := json.Marshal(ops)
			if _, err := cs.CoreV1().ServiceAccounts(np.Namespace).Patch(ctx, ps.ServiceAccount, types.JSONPatchType, body, metav1.PatchOptions{}); err != nil {
				return module.Applied{Changed: changed > 0}, conflict(saName, err)
			}
			changed++
		}
	}
	return module.Applied{Changed: changed > 0, Summary: fmt.Sprintf("%d object(s) created or updated in %d namespace(s)", changed, len(plans))}, nil
}

func desiredSecret(ns, name string, content []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/managed-by": "nksrun"}},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: content},
	}
}

func hasPullSecret(sa *corev1.ServiceAccount, name string) bool {
	for _, r := range sa.ImagePullSecrets {
		if r.Name == name {
			return true
		}
	}
	return false
}

func uniq(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// registerDockerConfig registers every credential in a docker config.json
// and reports whether it has auths.
func registerDockerConfig(sink module.SecretSink, b []byte) bool {
	var cfg struct {
		Auths map[string]map[string]any `json:"auths"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil || len(cfg.Auths) == 0 {
		return false
	}
	if sink == nil {
		return true
	}
	for _, a := range cfg.Auths {
		for _, k := range []string{"auth", "password", "identitytoken"} {
			s, ok := a[k].(string)
			if !ok {
				continue
			}
			sink.AddSecret(s)
			if k == "auth" {
				if dec, err := base64.StdEncoding.DecodeString(s); err == nil {
					sink.AddSecret(string(dec))
					if _, pw, ok := strings.Cut(string(dec), ":"); ok {
						sink.AddSecret(pw)
					}
				}
			}
		}
	}
	return true
}
