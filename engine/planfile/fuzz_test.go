package planfile_test

import (
	"encoding/json"
	"testing"
	"time"

	"nksrun/engine/planfile"
	"nksrun/engine/plans/planstest"
)

// FuzzRead: any bytes given as a plan file are refused or read without
// panicking, and what is read carries a checksum that matches its document.
func FuzzRead(f *testing.F) {
	p, _ := planstest.Golden()
	b, _ := json.MarshalIndent(p, "", "  ")
	f.Add(b)
	f.Add([]byte(`{"format_version":1,"checksum":"x"}`))
	f.Add([]byte(`{"format_version":1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := planfile.Read(data, 0, p.CreatedAt.Add(time.Hour))
		if err != nil {
			return
		}
		if got.Checksum == "" {
			t.Fatal("read a plan without a checksum")
		}
	})
}
