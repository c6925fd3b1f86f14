package k8spatch

import (
	"nksrun/testdata/golden"
	"strings"
	"testing"
)

const nksCloudConfig = `[Global]
auth-url=https://api-identity-infrastructure.nhncloudservice.com/v2.0
username=nks-user
password=Sup3rS3cret!
tenant-id=0123456789abcdef
region=KR1

[LoadBalancer]
use-octavia=true
`

func TestSetINI(t *testing.T) {
	set := map[string]string{"rescan-on-resize": "true"}
	for _, tc := range []struct {
		name, doc string
		set       map[string]string
		changed   bool
	}{
		{"cinder-csi-rescan-ini-no-section", nksCloudConfig, set, true},
		{"cinder-csi-rescan-ini-already", nksCloudConfig + "\n[BlockStorage]\nrescan-on-resize=true\n", set, false},
		{"cinder-csi-rescan-ini-false", nksCloudConfig + "\n[BlockStorage]\nbs-version=v3\nrescan-on-resize = false ; set by hand\n\n[Metadata]\nsearch-order=configDrive\n", set, true},
		{"cinder-csi-rescan-ini-section-no-key", "[Global]\nregion = KR1\n\n[BlockStorage]\n; keep this comment\nbs-version = v3\n\n[Networking]\nipv6-support-disabled = true\n", set, true},
		{"cinder-csi-rescan-ini-case", "[global]\nregion=KR1\n[blockstorage]\nRescan-On-Resize=true\n", set, false},
		{"cinder-csi-rescan-ini-duplicates", nksCloudConfig + "[BlockStorage]\nrescan-on-resize=true\n[BlockStorage]\nrescan-on-resize=false\n", set, true},
		{"cinder-csi-rescan-ini-no-trailing-newline", "[Global]\nregion=KR1", set, true},
		{"cinder-csi-rescan-ini-empty", "", set, true},
		{"cinder-csi-rescan-ini-quoted", "[BlockStorage]\nrescan-on-resize=\"true\"\n", set, false},
		{"cinder-csi-rescan-ini-two-keys", nksCloudConfig, map[string]string{"rescan-on-resize": "true", "bs-version": "v3"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, notes := SetINI(tc.doc, "BlockStorage", tc.set)
			if (got != tc.doc) != tc.changed {
				t.Fatalf("changed = %v, want %v; notes %v\n%s", got != tc.doc, tc.changed, notes, got)
			}
			if (len(notes) > 0) != tc.changed {
				t.Errorf("notes %v for changed=%v", notes, tc.changed)
			}
			// Idempotent: a second run changes nothing and never adds a section.
			again, notes2 := SetINI(got, "BlockStorage", tc.set)
			if again != got || len(notes2) > 0 {
				t.Errorf("second run changed the document: %v\n%s", notes2, again)
			}
			before := strings.Count(strings.ToLower(tc.doc), "[blockstorage]")
			after := strings.Count(strings.ToLower(got), "[blockstorage]")
			if after != max(before, 1) {
				t.Errorf("[BlockStorage] sections: %d before, %d after", before, after)
			}
			// Everything else is preserved: every old line is still there.
			for _, l := range strings.Split(tc.doc, "\n") {
				if !strings.Contains(strings.ToLower(l), "rescan-on-resize") && !strings.Contains(got, l) {
					t.Errorf("line %q lost", l)
				}
			}
			if tc.changed {
				golden.Assert(t, tc.name+".golden", []byte(got))
			}
		})
	}
}

func TestUnsetINI(t *testing.T) {
	doc := "[BlockStorage]\nrescan-on-resize=true\nbs-version=v3\n[Global]\nrescan-on-resize=keep\n"
	got, notes := UnsetINI(doc, "blockstorage", []string{"rescan-on-resize"})
	want := "[BlockStorage]\nbs-version=v3\n[Global]\nrescan-on-resize=keep\n"
	if got != want || len(notes) != 1 {
		t.Fatalf("got %q %v", got, notes)
	}
	if again, notes := UnsetINI(got, "BlockStorage", []string{"rescan-on-resize"}); again != got || len(notes) != 0 {
		t.Fatalf("second unset changed: %q", again)
	}
}

// TestSetINIBool: with gcfg bool comparison, an option that already means
// true in any spelling is left alone; false, a non-bool word or an empty
// value is set.
func TestSetINIBool(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"true", "[BlockStorage]\nrescan-on-resize=true\n", ""},
		{"True with blanks", "[BlockStorage]\nrescan-on-resize =  True \n", ""},
		{"yes", "[blockstorage]\nRescan-On-Resize=yes\n", ""},
		{"1 with a comment", "[BlockStorage]\nrescan-on-resize=1 ; enabled by hand\n", ""},
		{"quoted on", "[BlockStorage]\nrescan-on-resize=\"on\"\n", ""},
		{"bare key is true", "[BlockStorage]\nrescan-on-resize\n", ""},
		{"false", "[BlockStorage]\nrescan-on-resize=False\n", "[BlockStorage]\nrescan-on-resize=true\n"},
		{"0", "[BlockStorage]\nrescan-on-resize = 0\n", "[BlockStorage]\nrescan-on-resize = true\n"},
		{"empty value", "[BlockStorage]\nrescan-on-resize=\n", "[BlockStorage]\nrescan-on-resize=true\n"},
		{"not a bool", "[BlockStorage]\nrescan-on-resize=maybe\n", "[BlockStorage]\nrescan-on-resize=true\n"},
		{"other section", "[Global]\nrescan-on-resize=true\n", "[Global]\nrescan-on-resize=true\n\n[BlockStorage]\nrescan-on-resize=true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, notes := SetINIWith(tc.doc, "BlockStorage", map[string]string{"rescan-on-resize": "true"}, BoolEqual)
			want := tc.want
			if want == "" {
				want = tc.doc
				if len(notes) != 0 {
					t.Errorf("notes %v for an option that is already true", notes)
				}
			}
			if got != want {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
			// Exact comparison (the default) still rewrites other spellings.
			if exact, _ := SetINI(tc.doc, "BlockStorage", map[string]string{"rescan-on-resize": "true"}); tc.name == "yes" && exact == tc.doc {
				t.Errorf("exact comparison left %q alone", tc.doc)
			}
		})
	}
}
