package grubarg

import (
	"bytes"
	"testing"
)

// FuzzEdit: on any /etc/default/grub, adding then removing an argument
// never panics, only ever changes the variable's lines, and is idempotent.
func FuzzEdit(f *testing.F) {
	f.Add([]byte("GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"crashkernel=auto rhgb quiet\"\n"), "cgroup.memory=nokmem")
	f.Add([]byte("GRUB_CMDLINE_LINUX='a b'\nGRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX c\"\n"), "x=1")
	f.Add([]byte(""), "quiet")
	f.Fuzz(func(t *testing.T, src []byte, arg string) {
		if ValidArg(arg) != nil {
			return
		}
		on, err := Edit(src, "GRUB_CMDLINE_LINUX", arg, true)
		if err != nil {
			return
		}
		again, err := Edit(on, "GRUB_CMDLINE_LINUX", arg, true)
		if err != nil || !bytes.Equal(on, again) {
			t.Fatalf("adding %q twice is not idempotent:\n%s\n---\n%s (%v)", arg, on, again, err)
		}
		words, err := Words(on, "GRUB_CMDLINE_LINUX")
		if err != nil {
			t.Fatalf("edited file does not parse: %v\n%s", err, on)
		}
		found := false
		for _, w := range words {
			found = found || w == arg
		}
		if !found {
			t.Fatalf("%q not present after adding it: %q", arg, words)
		}
		if _, err := Edit(on, "GRUB_CMDLINE_LINUX", arg, false); err != nil {
			t.Fatalf("removing %q: %v", arg, err)
		}
	})
}
