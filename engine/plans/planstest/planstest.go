// Package planstest holds a fixed plan that covers every feature of the plan
// views and the plan file, shared by their tests.
package planstest

import (
	"encoding/json"
	"time"

	"nksrun/engine/module"
	"nksrun/engine/planfile"
	"nksrun/engine/plans"
	"nksrun/engine/redact"
)

// Secret is a secret param value with characters that JSON and
// Markdown escape, so a redactor working on rendered text would miss it.
const Secret = `hunter2<&>"pa|ss`

// Golden is a fixed plan covering every view feature: two runbooks,
// node and cluster targets, change/no-op/skip/unknown/finding actions, a
// diff containing a code fence, unreachable and failed targets, and a secret
// param that also appears in a summary and a diff.
func Golden() (*plans.Plan, *redact.Secrets) {
	s := &redact.Secrets{}
	s.AddSecret(Secret)
	p := &plans.Plan{
		FormatVersion: plans.FormatVersion,
		Tool:          "v0.1.0-test",
		CreatedAt:     time.Date(2025, 3, 1, 9, 30, 0, 0, time.UTC),
		Runbooks: []plans.RunbookPlan{
			{
				Name: "logrotate", Title: "Keep the docker container logrotate config identical", Section: "1",
				Path: "/opt/nksrun/runbooks/logrotate.yaml", Source: "name: logrotate\n# ...\n",
				SourceHash: "3f1a8e0c5b7d2a4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6",
				Params:     map[string]any{"dest": "/etc/logrotate.d/docker", "config": "files/docker-logrotate.conf"},
				Targets: []plans.TargetPlan{
					{Kind: plans.TargetNode, Name: "w-node-2", Address: "10.0.0.12", User: "ubuntu", Port: 22, Status: plans.StatusSkipped, Reason: "runtime is not docker"},
					{Kind: plans.TargetNode, Name: "w-node-0", Address: "10.0.0.10", User: "centos", Port: 22, Status: plans.StatusChanges, Steps: []plans.StepPlan{{
						ID: "config", Module: "file_sync", Params: json.RawMessage(`{"dest":"/etc/logrotate.d/docker","src":"files/docker-logrotate.conf","mode":"0644"}`),
						Planned: module.Planned{
							Action: module.Change, Summary: "update /etc/logrotate.d/docker (9f86d081 0644 root:root)",
							Reason:      "content differs (sha256 2c26b46b, want 9f86d081)",
							Diff:        "--- /etc/logrotate.d/docker\n+++ /etc/logrotate.d/docker\n@@ -1,3 +1,4 @@\n /var/lib/docker/containers/*/*.log {\n-  rotate 5\n+  rotate 10\n+  # ``` not a fence\n   copytruncate\n",
							Fingerprint: map[string]string{"sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"},
							Data:        json.RawMessage(`{"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}`),
						},
					}}},
					{Kind: plans.TargetNode, Name: "w-node-1", Address: "10.0.0.11", User: "rocky", Port: 22, Status: plans.StatusOK, Steps: []plans.StepPlan{{
						ID: "config", Module: "file_sync",
						Planned: module.Planned{Action: module.NoOp, Summary: "/etc/logrotate.d/docker in sync (sha256 9f86d081)", Fingerprint: map[string]string{"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}},
					}}},
					{Kind: plans.TargetNode, Name: "w-node-3", Address: "10.0.0.13", User: "centos", Port: 22, Status: plans.StatusUnreachable, Reason: "dial tcp 10.0.0.13:22: connect: no route to host"},
				},
			},
			{
				Name: "dockerhub-ratelimit", Title: "Docker Hub pull rate limit | image pull secret", Section: "7.2",
				Path: "/opt/nksrun/runbooks/dockerhub-ratelimit.yaml", Source: "name: dockerhub-ratelimit\n",
				SourceHash: "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
				Params:     map[string]any{"namespaces": []any{"default", "web"}, "password": Secret, "retries": 3},
				Targets: []plans.TargetPlan{{Kind: plans.TargetCluster, Name: "cluster", Status: plans.StatusChanges, Steps: []plans.StepPlan{
					{ID: "diagnose", Module: "report", Planned: module.Planned{Action: module.Finding, Summary: "pull rate limit hit", Findings: []module.FindingInfo{{
						Severity: "warning", Title: "3 pods failed to pull: toomanyrequests",
						Evidence:       []string{"web/api-7d9f: Failed to pull image \"nginx:1.25\": toomanyrequests", "login used password " + Secret},
						Recommendation: "create an image pull secret (step secret)",
					}}}},
					{ID: "secret", Module: "pull_secret", Planned: module.Planned{
						Action: module.Change, Summary: "create Secret web/dockerhub-pull", Reason: "missing",
						Diff:        "--- web/dockerhub-pull (absent)\n+++ web/dockerhub-pull\n+data:\n+  .dockerconfigjson: (secret, 120 bytes)\n+# auth " + Secret + "\n",
						Fingerprint: map[string]string{"web/dockerhub-pull": "absent"},
					}},
					{ID: "restart", Module: "rollout_restart", Planned: module.Planned{Action: module.Unknown, Summary: "restart Deployment web/api", Reason: "depends on whether the secret step changes something"}},
					{ID: "calico", Module: "k8s_patch", Planned: module.Planned{Action: module.Skip, Summary: "skipped", Reason: "when: params.retries > 5 is false"}},
				}}},
			},
		},
	}
	if err := planfile.Seal(p); err != nil {
		panic(err)
	}
	return p, s
}
