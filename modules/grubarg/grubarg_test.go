package grubarg

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"nksrun/engine/module"
	"nksrun/engine/module/moduletest"
)

const original = "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX='crashkernel=auto rhgb quiet'  # odd quoting on purpose\n"

// fakeMkconfig generates a one-entry grub.cfg from the defaults file, like
// grub2-mkconfig: FILE.new first, then rename. mode: ok, fail (exit 1 after
// writing .new), noarg (drops the argument), stray (exit 0 but leaves .new).
func fakeMkconfig(file, cfg, mode string) string {
	gen := `( . ` + file + `; printf 'menuentry x {\n\tlinux /vmlinuz root=/dev/vda1 ro %s\n}\n' "$GRUB_CMDLINE_LINUX" ) >` + cfg + `.new`
	switch mode {
	case "fail":
		return gen + " && echo 'syntax error' >&2 && exit 1"
	case "noarg":
		return gen + " && sed -i 's/ cgroup.memory=nokmem//' " + cfg + ".new && mv " + cfg + ".new " + cfg
	case "stray":
		return gen + " && cp " + cfg + ".new " + cfg
	}
	return gen + " && mv " + cfg + ".new " + cfg
}

func planFor(t *testing.T, dir string, p *Params, cmdline string) module.Planned {
	t.Helper()
	node := &module.Node{Name: "n1", Facts: map[string]any{"osFamily": "rocky", "host": map[string]any{"os": "rocky", "cmdline": cmdline}}, Runner: &moduletest.LocalRunner{}}
	tg := module.Target{Node: node}
	probes, err := New().(module.Prober).Probes(tg, module.Step{ID: "grub", Params: p})
	if err != nil {
		t.Fatal(err)
	}
	res := map[string]module.ProbeResult{}
	for _, pr := range probes {
		r, err := (&moduletest.LocalRunner{}).Run(context.Background(), pr.Command, module.RunOpts{})
		if err != nil {
			t.Fatal(err)
		}
		res[pr.Key] = module.ProbeResult{Output: r.Stdout, ExitCode: r.ExitCode}
	}
	pl, err := New().Plan(context.Background(), tg, module.Step{ID: "grub", Params: p}, res)
	if err != nil {
		t.Fatal(err)
	}
	// Plans travel as JSON.
	b, _ := json.Marshal(pl)
	var back module.Planned
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return back
}

func TestPlanApplyLocal(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("needs flock (util-linux)")
	}
	for _, mode := range []string{"ok", "fail", "noarg", "stray"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			file, cfg := filepath.Join(dir, "grub"), filepath.Join(dir, "grub.cfg")
			if err := os.WriteFile(file, []byte(original), 0o640); err != nil {
				t.Fatal(err)
			}
			p := &Params{Arg: arg, File: file, GrubCfg: cfg, Regenerate: fakeMkconfig(file, cfg, mode)}
			if err := (Module{}).Validate(p); err != nil {
				t.Fatal(err)
			}
			cmdline := "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro crashkernel=auto rhgb quiet"
			pl := planFor(t, dir, p, cmdline)
			if pl.Action != module.Change || !strings.Contains(pl.Diff, "+GRUB_CMDLINE_LINUX='crashkernel=auto rhgb quiet cgroup.memory=nokmem'") {
				t.Fatalf("plan: %+v", pl)
			}
			if pl.Outputs["reboot_required"] != true {
				t.Fatalf("reboot_required = %v", pl.Outputs["reboot_required"])
			}
			tg := module.Target{Node: &module.Node{Name: "n1", Runner: &moduletest.LocalRunner{}}}
			ap, err := New().Apply(context.Background(), tg, module.Step{ID: "grub", Params: p}, pl)
			got, _ := os.ReadFile(file)
			baks, _ := filepath.Glob(file + ".nksrun-*")
			if mode != "ok" {
				if err == nil {
					t.Fatalf("apply succeeded with a %s regeneration", mode)
				}
				t.Logf("error: %v", err)
				if string(got) != original {
					t.Fatalf("file not restored byte for byte:\n%q", got)
				}
				if st, _ := os.Stat(file); st.Mode().Perm() != 0o640 {
					t.Fatalf("mode %v after restore", st.Mode())
				}
				if _, err := os.Stat(cfg + ".new"); err == nil {
					t.Fatal("grub.cfg.new left behind")
				}
				if len(baks) != 0 {
					t.Fatalf("backup files left: %v", baks)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !ap.Changed || !strings.Contains(string(got), "quiet cgroup.memory=nokmem'  # odd quoting") {
				t.Fatalf("applied %+v, file %q", ap, got)
			}
			if st, _ := os.Stat(file); st.Mode().Perm() != 0o640 {
				t.Fatalf("mode %v after edit", st.Mode())
			}
			if len(baks) != 1 {
				t.Fatalf("want one backup, have %v", baks)
			}
			if b, _ := os.ReadFile(baks[0]); string(b) != original {
				t.Fatalf("backup %q", b)
			}
			// Second plan: nothing to change, reboot still required until booted.
			pl2 := planFor(t, dir, p, cmdline)
			if pl2.Action != module.NoOp || pl2.Outputs["reboot_required"] != true {
				t.Fatalf("second plan: %+v", pl2)
			}
			pl3 := planFor(t, dir, p, cmdline+" cgroup.memory=nokmem")
			if pl3.Action != module.NoOp || pl3.Outputs["reboot_required"] != false {
				t.Fatalf("plan after boot: %+v", pl3)
			}
			// A stale plan is refused.
			os.WriteFile(file, []byte(original+"# edited by someone\n"), 0o640)
			if _, err := New().Apply(context.Background(), tg, module.Step{ID: "grub", Params: p}, pl); err == nil || !strings.Contains(err.Error(), "stale") {
				t.Fatalf("stale apply: %v", err)
			}
		})
	}
}

func TestTargetByFamily(t *testing.T) {
	b := boot{cmds: map[string]string{"grub2-mkconfig": "/usr/sbin/grub2-mkconfig", "update-grub": "/usr/sbin/update-grub", "grub-mkconfig": "/usr/sbin/grub-mkconfig"}}
	cfg, regen, err := target(Params{}, "rhel", b)
	if err != nil || cfg != "/boot/grub2/grub.cfg" || regen != "grub2-mkconfig -o '/boot/grub2/grub.cfg'" {
		t.Fatalf("rhel: %s %s %v", cfg, regen, err)
	}
	b.efi, b.efiCfg = true, "/boot/efi/EFI/centos/grub.cfg"
	if cfg, regen, _ = target(Params{}, "rhel", b); cfg != b.efiCfg || !strings.Contains(regen, b.efiCfg) {
		t.Fatalf("rhel efi: %s %s", cfg, regen)
	}
	if cfg, regen, _ = target(Params{}, "debian", b); cfg != "/boot/grub/grub.cfg" || regen != "update-grub" {
		t.Fatalf("debian: %s %s", cfg, regen)
	}
	if _, _, err = target(Params{}, "", b); err == nil {
		t.Fatal("unknown family accepted")
	}
	if _, _, err = target(Params{}, "rhel", boot{cmds: map[string]string{}}); err == nil {
		t.Fatal("missing grub2-mkconfig accepted")
	}
	// BLS (RHEL/Rocky 8+): the boot entries are updated with grubby.
	bls := boot{bls: map[string]bool{"/boot/grub2/grub.cfg": true}, cmds: map[string]string{"grub2-mkconfig": "/usr/sbin/grub2-mkconfig", "grubby": "/usr/sbin/grubby"}}
	if _, regen, _ = target(Params{Arg: arg, State: "present"}, "rhel", bls); regen != "grubby --update-kernel=ALL '--args=cgroup.memory=nokmem'" {
		t.Fatalf("bls: %s", regen)
	}
	if _, regen, _ = target(Params{Arg: arg, State: "absent"}, "rhel", bls); regen != "grubby --update-kernel=ALL '--remove-args=cgroup.memory=nokmem'" {
		t.Fatalf("bls absent: %s", regen)
	}
	delete(bls.cmds, "grubby")
	if _, _, err = target(Params{Arg: arg}, "rhel", bls); err == nil || !strings.Contains(err.Error(), "grubby") {
		t.Fatalf("bls without grubby: %v", err)
	}
}
