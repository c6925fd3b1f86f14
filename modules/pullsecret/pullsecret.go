// Package pullsecret implements the pull_secret module: create or refresh a
// kubernetes.io/dockerconfigjson Secret in the namespace of each target
// ServiceAccount and add it to that ServiceAccount's imagePullSecrets. The
// targets are the ServiceAccounts the failing pods run as (service_accounts)
// and/or one ServiceAccount per listed namespace (default "default").
//
// Only Secrets nksrun created (label app.kubernetes.io/managed-by=nksrun)
// are ever updated: a Secret of that name that belongs to someone else is
// left alone, with a finding, and its values are never read into the
// redactor or the plan.
//
// Credentials never appear in a runbook, a plan or any output: they are
// read from a file (a docker config.json) or from environment variables
// named by the runbook, at plan time (to know whether the Secret is current)
// and again at apply; the credentials nksrun writes are registered for
// redaction, and the plan holds only names and resourceVersions.
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
	// Namespaces: their ServiceAccount ServiceAccount gets the Secret.
	Namespaces []string `yaml:"namespaces"`
	// ServiceAccounts ("namespace/name") get the Secret too: the ones the
	// failing pods run as, which are often not "default".
	ServiceAccounts []string `yaml:"service_accounts,omitempty"`
	SecretName      string   `yaml:"secret_name,omitempty"`     // default dockerhub-pull
	Server          string   `yaml:"server,omitempty"`          // default https://index.docker.io/v1/
	ServiceAccount  string   `yaml:"service_account,omitempty"` // default "default"
	// CredentialsFile is a docker config.json (`{"auths": …}`, as written by
	// `docker login`) used as the Secret's content.
	CredentialsFile string `yaml:"credentials_file,omitempty"`
	// UsernameEnv/PasswordEnv name environment variables holding the
	// credentials (the names, never the values, are in the runbook).
	UsernameEnv string `yaml:"username_env,omitempty"`
	PasswordEnv string `yaml:"password_env,omitempty"`
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
func New() module.Module { return module.Adapt[Params](Module{}) }

var _ module.Typed[Params] = Module{}

func (Module) Scope() module.Scope { return module.ScopeCluster }

// Outputs are the keys later steps read as steps.<id>.<key>: the number of namespaces whose secret or service account changes.
func (Module) Outputs() []string { return []string{"count"} }

func (Module) Validate(ps *Params) error {
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

// ManagedBy is the ownership label nksrun puts on the Secrets it creates.
// A Secret without it belongs to someone else and is never overwritten.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "nksrun"
)

// saRef is one ServiceAccount that must reference the pull Secret.
type saRef struct{ Namespace, Name string }

// targets are the ServiceAccounts the params name: every entry of
// service_accounts ("namespace/name"), and the ServiceAccount
// service_account (default "default") of every namespace in namespaces.
func targets(ps *Params) ([]saRef, error) {
	seen := map[saRef]bool{}
	var out []saRef
	add := func(r saRef) {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for _, ns := range ps.Namespaces {
		if ns != "" {
			add(saRef{ns, ps.ServiceAccount})
		}
	}
	for _, s := range ps.ServiceAccounts {
		ns, name, ok := strings.Cut(s, "/")
		if !ok || ns == "" || name == "" {
			return nil, fmt.Errorf("service_accounts: %q is not namespace/name", s)
		}
		add(saRef{ns, name})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// nsPlan is one namespace's part of the plan (names and versions only).
type nsPlan struct {
	Namespace string `json:"namespace"`
	Secret    string `json:"secret"`             // create | update | ok
	SecretRV  string `json:"secretRV,omitempty"` // for update
	// SAs are the namespace's ServiceAccounts to create or patch.
	SAs []saPlan `json:"serviceAccounts,omitempty"`
}

type saPlan struct {
	Name   string `json:"name"`
	Action string `json:"action"` // create | patch
	RV     string `json:"resourceVersion,omitempty"`
}

func (m Module) Plan(ctx context.Context, t module.Target, _ string, ps *Params, _ map[string]module.ProbeResult) (module.Planned, error) {
	ps.defaults()
	refs, err := targets(ps)
	if err != nil {
		return module.Planned{}, err
	}
	if len(refs) == 0 {
		return module.Planned{Action: module.NoOp, Summary: "no target ServiceAccounts", Outputs: map[string]any{"count": 0}}, nil
	}
	if t.Cluster == nil || t.Cluster.Clientset == nil {
		return module.Planned{}, errors.New("no cluster configured (--kubeconfig)")
	}
	want, err := dockerConfig(t, ps)
	if err != nil {
		return module.Planned{}, err
	}
	cs := t.Cluster.Clientset
	byNS := map[string][]string{}
	var nss []string
	for _, r := range refs {
		if byNS[r.Namespace] == nil {
			nss = append(nss, r.Namespace)
		}
		byNS[r.Namespace] = append(byNS[r.Namespace], r.Name)
	}
	var plans []nsPlan
	var diffs, parts, refused []string
	fp := map[string]string{}
	for _, ns := range nss {
		np := nsPlan{Namespace: ns, Secret: "ok"}
		sec, err := cs.CoreV1().Secrets(ns).Get(ctx, ps.SecretName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			np.Secret = "create"
			dry := desiredSecret(ns, ps.SecretName, want)
			if _, err := cs.CoreV1().Secrets(ns).Create(ctx, dry, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
				return module.Planned{}, fmt.Errorf("Secret %s/%s: dry run: %w", ns, ps.SecretName, err)
			}
			diffs = append(diffs, fmt.Sprintf("+ Secret %s/%s (type %s, label %s=%s, key %s: (secret, %d bytes))\n", ns, ps.SecretName, corev1.SecretTypeDockerConfigJson, ManagedByLabel, ManagedByValue, corev1.DockerConfigJsonKey, len(want)))
		case err != nil:
			return module.Planned{}, fmt.Errorf("Secret %s/%s: %w", ns, ps.SecretName, err)
		case sec.Labels[ManagedByLabel] != ManagedByValue:
			// Someone else's Secret: its values are not ours to read out,
			// register or replace. The namespace is left alone.
			refused = append(refused, fmt.Sprintf("%s: Secret %s exists and was not created by nksrun (no label %s=%s): left alone; choose another secret_name or reference it yourself", ns, ps.SecretName, ManagedByLabel, ManagedByValue))
			continue
		case sec.Type != corev1.SecretTypeDockerConfigJson:
			refused = append(refused, fmt.Sprintf("%s: Secret %s has type %s, not %s (the type cannot be changed in place): left alone", ns, ps.SecretName, sec.Type, corev1.SecretTypeDockerConfigJson))
			continue
		default:
			if !bytes.Equal(sec.Data[corev1.DockerConfigJsonKey], want) {
				np.Secret, np.SecretRV = "update", sec.ResourceVersion
				fp["Secret "+ns+"/"+ps.SecretName] = sec.ResourceVersion
				diffs = append(diffs, fmt.Sprintf("~ Secret %s/%s key %s: (secret, %d bytes) → (secret, %d bytes, changed)\n", ns, ps.SecretName, corev1.DockerConfigJsonKey, len(sec.Data[corev1.DockerConfigJsonKey]), len(want)))
			}
		}
		var what []string
		if np.Secret != "ok" {
			what = append(what, np.Secret+" Secret "+ps.SecretName)
		}
		for _, name := range byNS[ns] {
			sa, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				np.SAs = append(np.SAs, saPlan{Name: name, Action: "create"})
				diffs = append(diffs, fmt.Sprintf("+ ServiceAccount %s/%s (imagePullSecrets: [%s])\n", ns, name, ps.SecretName))
				what = append(what, "create ServiceAccount "+name)
			case err != nil:
				return module.Planned{}, fmt.Errorf("ServiceAccount %s/%s: %w", ns, name, err)
			case !hasPullSecret(sa, ps.SecretName):
				np.SAs = append(np.SAs, saPlan{Name: name, Action: "patch", RV: sa.ResourceVersion})
				fp["ServiceAccount "+ns+"/"+name] = sa.ResourceVersion
				var names []string
				for _, r := range sa.ImagePullSecrets {
					names = append(names, r.Name)
				}
				diffs = append(diffs, fmt.Sprintf("~ ServiceAccount %s/%s imagePullSecrets: [%s] → [%s]\n", ns, name, strings.Join(names, ", "), strings.Join(append(names, ps.SecretName), ", ")))
				what = append(what, "reference it from ServiceAccount "+name)
			}
		}
		if len(what) > 0 {
			plans = append(plans, np)
			parts = append(parts, ns+": "+strings.Join(what, ", "))
		}
	}
	var findings []module.FindingInfo
	if len(refused) > 0 {
		findings = []module.FindingInfo{{Severity: "warning", Title: "pull Secret not created by nksrun: those namespaces are left alone", Evidence: refused,
			Recommendation: "--set secret_name=ANOTHER_NAME, or add the Secret to the ServiceAccounts' imagePullSecrets yourself"}}
	}
	if len(plans) == 0 {
		if len(refused) > 0 {
			return module.Planned{Action: module.Finding, Summary: strings.Join(refused, "; "), Findings: findings, Outputs: map[string]any{"count": 0, "refused": len(refused)}}, nil
		}
		return module.Planned{Action: module.NoOp, Summary: fmt.Sprintf("pull secret %s current and referenced by %d ServiceAccount(s)", ps.SecretName, len(refs)), Outputs: map[string]any{"count": 0, "refused": 0}}, nil
	}
	data, err := json.Marshal(plans)
	if err != nil {
		return module.Planned{}, err
	}
	sum := strings.Join(parts, "; ")
	if len(refused) > 0 {
		sum += "; left alone: " + strings.Join(refused, "; ")
	}
	return module.Planned{
		Action: module.Change, Summary: sum, Diff: strings.Join(diffs, ""),
		Fingerprint: fp, Data: data, Outputs: map[string]any{"count": len(plans), "refused": len(refused)}, Findings: findings,
		Reason: "pods pull " + ps.Server + " images with the registry credentials instead of anonymously (pods created before the change must be re-created)",
	}, nil
}

func (m Module) Apply(ctx context.Context, t module.Target, _ string, ps *Params, p module.Planned) (module.Applied, error) {
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
			cur, err := cs.CoreV1().Secrets(np.Namespace).Get(ctx, ps.SecretName, metav1.GetOptions{})
			if err != nil {
				return module.Applied{Changed: changed > 0}, conflict(secName, err)
			}
			// Ownership is re-checked on the live object: a Secret that
			// someone else took over since the plan is not overwritten.
			if cur.Labels[ManagedByLabel] != ManagedByValue {
				return module.Applied{Changed: changed > 0}, fmt.Errorf("%s: no longer labelled %s=%s: %w", secName, ManagedByLabel, ManagedByValue, module.ErrConflict)
			}
			sec := desiredSecret(np.Namespace, ps.SecretName, want)
			// Update with the planned resourceVersion: 409 if it moved.
			sec.ResourceVersion = np.SecretRV
			sec.Labels, sec.Annotations = cur.Labels, cur.Annotations
			if _, err := cs.CoreV1().Secrets(np.Namespace).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
				return module.Applied{Changed: changed > 0}, conflict(secName, err)
			}
			changed++
		}
		for _, sp := range np.SAs {
			saName := "ServiceAccount " + np.Namespace + "/" + sp.Name
			switch sp.Action {
			case "create":
				sa := &corev1.ServiceAccount{
					ObjectMeta:       metav1.ObjectMeta{Name: sp.Name, Namespace: np.Namespace},
					ImagePullSecrets: []corev1.LocalObjectReference{{Name: ps.SecretName}},
				}
				if _, err := cs.CoreV1().ServiceAccounts(np.Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
					return module.Applied{Changed: changed > 0}, conflict(saName, err)
				}
				changed++
			case "patch":
				sa, err := cs.CoreV1().ServiceAccounts(np.Namespace).Get(ctx, sp.Name, metav1.GetOptions{})
				if err != nil {
					return module.Applied{Changed: changed > 0}, conflict(saName, err)
				}
				if sa.ResourceVersion != sp.RV {
					return module.Applied{Changed: changed > 0}, fmt.Errorf("%s: resourceVersion %s at plan, %s now: %w", saName, sp.RV, sa.ResourceVersion, module.ErrConflict)
				}
				ops := []kubeutil.Op{{Op: "test", Path: "/metadata/resourceVersion", Value: sp.RV},
					{Op: "add", Path: "/imagePullSecrets/-", Value: map[string]string{"name": ps.SecretName}}}
				if len(sa.ImagePullSecrets) == 0 {
					ops[1] = kubeutil.Op{Op: "add", Path: "/imagePullSecrets", Value: []map[string]string{{"name": ps.SecretName}}}
				}
				body, _ := json.Marshal(ops)
				if _, err := cs.CoreV1().ServiceAccounts(np.Namespace).Patch(ctx, sp.Name, types.JSONPatchType, body, metav1.PatchOptions{}); err != nil {
					return module.Applied{Changed: changed > 0}, conflict(saName, err)
				}
				changed++
			}
		}
	}
	return module.Applied{Changed: changed > 0, Summary: fmt.Sprintf("%d object(s) created or updated in %d namespace(s)", changed, len(plans))}, nil
}

func desiredSecret(ns, name string, content []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{ManagedByLabel: ManagedByValue}},
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
