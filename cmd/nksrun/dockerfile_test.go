package main

// The container image cannot be built here (no Docker engine), so this test
// does what its build stage does: copy exactly what the Dockerfile COPYs
// into an empty directory, build there with the Dockerfile's command, and
// run the binary as the image would (its runbooks under /runbooks, as the
// CronJob that `nksrun cron --kubernetes` prints expects).

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestDockerfileBuildStage(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" { // CI always runs it
		t.Skip("builds nksrun from a copy of the tree")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, "cmd/nksrun/Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := t.TempDir() // the build stage's /src
	var buildCmd string
	var final []string // COPY lines of the last stage
	stage := 0
	sc := bufio.NewScanner(f)
	copyRE := regexp.MustCompile(`^COPY (\S+(?: \S+)*) (\S+)$`)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FROM "):
			stage++
		case strings.HasPrefix(line, "COPY --from="):
		case strings.HasPrefix(line, "COPY "):
			m := copyRE.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("cannot read %q", line)
			}
			if stage > 1 {
				final = append(final, m[1])
				continue
			}
			for _, src := range strings.Fields(m[1]) {
				dst := filepath.Join(ctx, m[2])
				if m[2] == "./" {
					dst = filepath.Join(ctx, filepath.Base(src))
				}
				if out, err := exec.Command("cp", "-a", filepath.Join(root, src), dst).CombinedOutput(); err != nil {
					t.Fatalf("COPY %s: %v %s", src, err, out)
				}
			}
		case strings.HasPrefix(line, "RUN go build"):
			buildCmd = line
		}
	}
	if buildCmd == "" {
		t.Fatal("no go build in the Dockerfile")
	}
	// The ldflags name a real variable: the same as the Makefile's.
	mk, _ := os.ReadFile(filepath.Join(root, "Makefile"))
	if !strings.Contains(buildCmd, "-X nksrun/cmd/nksrun/cli.Version=") || !strings.Contains(string(mk), "-X nksrun/cmd/nksrun/cli.Version=") {
		t.Errorf("the Dockerfile and the Makefile stamp different version variables:\n%s", buildCmd)
	}
	bin := filepath.Join(t.TempDir(), "nksrun")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X nksrun/cmd/nksrun/cli.Version=image-test", "-o", bin, "./cmd/nksrun")
	cmd.Dir = ctx
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the build stage fails with what the Dockerfile copies: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil || !strings.Contains(string(out), "image-test") {
		t.Errorf("version: %v %s", err, out)
	}
	// The final stage ships runbooks/ as /runbooks: every runbook the
	// CronJob names (/runbooks/NAME.yaml) and the files they push.
	if len(final) != 1 || final[0] != "runbooks/" {
		t.Fatalf("final stage copies %v, want runbooks/", final)
	}
	out, err := exec.Command(bin, "validate", filepath.Join(root, "runbooks")+"/logrotate.yaml").CombinedOutput()
	if err != nil {
		t.Errorf("validate from the image's runbooks: %v %s", err, out)
	}
	if out, err := exec.Command(bin, "list").CombinedOutput(); err != nil || !strings.Contains(string(out), "logrotate") {
		t.Errorf("the image's binary lists no built-in runbooks: %v %s", err, out)
	}
}
