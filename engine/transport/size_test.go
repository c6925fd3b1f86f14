package transport

import (
	"testing"

	"nksrun/engine/module"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1048576", 1 << 20, true},
		{"16MiB", 16 << 20, true},
		{"16M", 16 << 20, true},
		{"16m", 16 << 20, true},
		{"512K", 512 << 10, true},
		{"512 KiB", 512 << 10, true},
		{"1G", 1 << 30, true},
		{"2GiB", 2 << 30, true},
		{"100B", 100, true},
		{"", 0, false},
		{"0", 0, false},
		{"-1M", 0, false},
		{"1.5M", 0, false},
		{"16MB", 0, false}, // ambiguous (1000 or 1024?): refused
		{"M", 0, false},
		{"9999999999G", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	// What FormatBytes prints, ParseSize reads back.
	for _, n := range []int64{1, 1023, 1 << 10, 1536 << 10, module.DefaultMaxOutput, 3 << 30} {
		if got, err := ParseSize(module.FormatBytes(n)); err != nil || got != n {
			t.Errorf("round trip of %d (%q): %d %v", n, module.FormatBytes(n), got, err)
		}
	}
}
