package grubarg

import (
	"nksrun/testdata/golden"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const arg = "cgroup.memory=nokmem"

func TestEditTable(t *testing.T) {
	tests := []struct {
		name, in, want string
		absent         bool
		err            string
	}{
		{name: "double quoted", in: "GRUB_CMDLINE_LINUX=\"rhgb quiet\"\n", want: "GRUB_CMDLINE_LINUX=\"rhgb quiet cgroup.memory=nokmem\"\n"},
		{name: "already present", in: "GRUB_CMDLINE_LINUX=\"rhgb cgroup.memory=nokmem quiet\"\n", want: "GRUB_CMDLINE_LINUX=\"rhgb cgroup.memory=nokmem quiet\"\n"},
		{name: "duplicates removed", in: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem rhgb cgroup.memory=nokmem quiet cgroup.memory=nokmem\"\n", want: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem rhgb quiet\"\n"},
		{name: "single quoted", in: "GRUB_CMDLINE_LINUX='quiet'\n", want: "GRUB_CMDLINE_LINUX='quiet cgroup.memory=nokmem'\n"},
		{name: "empty", in: "GRUB_CMDLINE_LINUX=\"\"\n", want: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\n"},
		{name: "unquoted empty", in: "GRUB_CMDLINE_LINUX=\n", want: "GRUB_CMDLINE_LINUX=cgroup.memory=nokmem\n"},
		{name: "unquoted word gets quotes", in: "GRUB_CMDLINE_LINUX=quiet\n", want: "GRUB_CMDLINE_LINUX=\"quiet cgroup.memory=nokmem\"\n"},
		{name: "comment kept", in: "GRUB_CMDLINE_LINUX=\"quiet\"  # keep me\n", want: "GRUB_CMDLINE_LINUX=\"quiet cgroup.memory=nokmem\"  # keep me\n"},
		{name: "export and indent kept", in: "  export GRUB_CMDLINE_LINUX=\"quiet\"\n", want: "  export GRUB_CMDLINE_LINUX=\"quiet cgroup.memory=nokmem\"\n"},
		{name: "trailing blank inside quotes kept", in: "GRUB_CMDLINE_LINUX=\"quiet \"\n", want: "GRUB_CMDLINE_LINUX=\"quiet cgroup.memory=nokmem \"\n"},
		{name: "other value of the key kept", in: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nosocket\"\n", want: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nosocket cgroup.memory=nokmem\"\n"},
		{name: "prefix of arg is another arg", in: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmemX\"\n", want: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmemX cgroup.memory=nokmem\"\n"},
		{name: "DEFAULT variable untouched", in: "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"\"\n", want: "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\n"},
		{name: "missing variable appended", in: "GRUB_TIMEOUT=5\n", want: "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\n"},
		{name: "missing variable, no final newline", in: "GRUB_TIMEOUT=5", want: "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\n"},
		{name: "commented assignment ignored", in: "#GRUB_CMDLINE_LINUX=\"x\"\nGRUB_CMDLINE_LINUX=\"quiet\"\n", want: "#GRUB_CMDLINE_LINUX=\"x\"\nGRUB_CMDLINE_LINUX=\"quiet cgroup.memory=nokmem\"\n"},
		{name: "last assignment wins", in: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\nGRUB_CMDLINE_LINUX=\"quiet\"\n", want: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\nGRUB_CMDLINE_LINUX=\"quiet cgroup.memory=nokmem\"\n"},
		{name: "self append counts", in: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\nGRUB_CMDLINE_LINUX=\"${GRUB_CMDLINE_LINUX} quiet\"\n", want: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\nGRUB_CMDLINE_LINUX=\"${GRUB_CMDLINE_LINUX} quiet\"\n"},
		{name: "CRLF kept", in: "GRUB_CMDLINE_LINUX=\"quiet\"\r\n", want: "GRUB_CMDLINE_LINUX=\"quiet cgroup.memory=nokmem\"\r\n"},
		{name: "tabs between args kept", in: "GRUB_CMDLINE_LINUX=\"a\tb\"\n", want: "GRUB_CMDLINE_LINUX=\"a\tb cgroup.memory=nokmem\"\n"},
		{name: "absent removes every copy", absent: true, in: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem rhgb cgroup.memory=nokmem quiet\"\n", want: "GRUB_CMDLINE_LINUX=\"rhgb quiet\"\n"},
		{name: "absent last word", absent: true, in: "GRUB_CMDLINE_LINUX=\"rhgb cgroup.memory=nokmem\"\n", want: "GRUB_CMDLINE_LINUX=\"rhgb\"\n"},
		{name: "absent only word", absent: true, in: "GRUB_CMDLINE_LINUX=\"cgroup.memory=nokmem\"\n", want: "GRUB_CMDLINE_LINUX=\"\"\n"},
		{name: "absent nothing to do", absent: true, in: "GRUB_CMDLINE_LINUX=\"quiet\"\n", want: "GRUB_CMDLINE_LINUX=\"quiet\"\n"},
		{name: "absent no variable", absent: true, in: "GRUB_TIMEOUT=5\n", want: "GRUB_TIMEOUT=5\n"},
		{name: "command substitution refused", in: "GRUB_CMDLINE_LINUX=\"$(cat /x)\"\n", err: "line 1"},
		{name: "other variable refused", in: "GRUB_CMDLINE_LINUX=\"$EXTRA quiet\"\n", err: "$EXTRA"},
		{name: "backslash refused", in: "GRUB_CMDLINE_LINUX=\"a\\\"b\"\n", err: "backslash"},
		{name: "multi-line refused", in: "GRUB_CMDLINE_LINUX=\"a\nb\"\n", err: "does not end"},
		{name: "concatenation refused", in: "GRUB_CMDLINE_LINUX=\"a\"b\n", err: "right after"},
		{name: "backquote refused", in: "GRUB_CMDLINE_LINUX=`x`\n", err: "partly quoted"},
		{name: "single quotes keep $ literal", in: "GRUB_CMDLINE_LINUX='$x'\n", want: "GRUB_CMDLINE_LINUX='$x cgroup.memory=nokmem'\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Edit([]byte(tt.in), "GRUB_CMDLINE_LINUX", arg, !tt.absent)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got\n%q\nwant\n%q", got, tt.want)
			}
			// Idempotent: a second edit changes nothing.
			again, err := Edit(got, "GRUB_CMDLINE_LINUX", arg, !tt.absent)
			if err != nil || string(again) != string(got) {
				t.Fatalf("second edit changed the file: %q (err %v)", again, err)
			}
			words, err := Words(got, "GRUB_CMDLINE_LINUX")
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, w := range words {
				if w == arg {
					n++
				}
			}
			if want := map[bool]int{false: 1, true: 0}[tt.absent]; n != want {
				t.Fatalf("effective words %q hold %s %d times, want %d", words, arg, n, want)
			}
		})
	}
}

func TestValidArg(t *testing.T) {
	for _, a := range []string{"cgroup.memory=nokmem", "console=ttyS0,115200n8", "quiet", "rd.lvm.lv=centos/root"} {
		if err := ValidArg(a); err != nil {
			t.Errorf("%q: %v", a, err)
		}
	}
	for _, a := range []string{"", "a b", "a\"b", "$(x)", "a'b", "-x", "a\\b"} {
		if ValidArg(a) == nil {
			t.Errorf("%q accepted", a)
		}
	}
}

// TestEditGolden edits real-world /etc/default/grub files (CentOS 7,
// Rocky 8, Ubuntu 22.04, an image that already appends the arg twice).
func TestEditGolden(t *testing.T) {
	dir := golden.Path("grub")
	inputs, err := filepath.Glob(filepath.Join(dir, "*.grub"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs in %s (%v)", dir, err)
	}
	for _, in := range inputs {
		src, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, state := range []string{"present", "absent"} {
			name := strings.TrimSuffix(filepath.Base(in), ".grub") + "." + state
			t.Run(name, func(t *testing.T) {
				got, err := Edit(src, "GRUB_CMDLINE_LINUX", arg, state == "present")
				if err != nil {
					t.Fatal(err)
				}
				golden.Assert(t, filepath.Join(dir, name+".golden"), got)
				// Only the variable's lines may change.
				a, b := strings.Split(string(src), "\n"), strings.Split(string(got), "\n")
				for i := range a {
					if i < len(b) && a[i] != b[i] && !strings.Contains(a[i], "GRUB_CMDLINE_LINUX=") {
						t.Fatalf("line %d changed: %q -> %q", i+1, a[i], b[i])
					}
				}
			})
		}
	}
}
