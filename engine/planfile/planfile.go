// Package planfile writes and reads saved plans (`nksrun plan --out FILE`,
// `nksrun apply FILE`): the file format, its checksum, its age limit.
package planfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"nksrun/engine/plans"
)

// computeChecksum hashes the plan as it is (or will be) written: the JSON
// document with the "checksum" member removed, normalised (objects with
// sorted keys, numbers as written, no insignificant whitespace). It works on
// the generic document rather than on the Go struct, so a field the struct
// does not know (added by hand) or a number that would not survive a
// round trip through Go types still changes the sum.
func computeChecksum(p *plans.Plan) (string, error) {
	c := *p
	c.Checksum = ""
	b, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	return documentChecksum(b)
}

// documentChecksum is the checksum of a plan document given as JSON bytes.
func documentChecksum(doc []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	delete(v, "checksum")
	norm, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(norm)
	return hex.EncodeToString(sum[:]), nil
}

// Seal sets the checksum; call it last, before saving.
func Seal(p *plans.Plan) error {
	sum, err := computeChecksum(p)
	p.Checksum = sum
	return err
}

// Errors returned by Read.
var (
	ErrPlanEdited  = errors.New("plan file was edited after it was written (checksum mismatch)")
	ErrPlanExpired = errors.New("plan is too old")
)

// Read decodes a saved plan and checks, in this order, that it is a
// plan, that its format version is one this nksrun reads, that it was not
// edited (checksum over the document as written), and that it is not older
// than maxAge (0 = no limit) or dated in the future beyond a small clock skew.
func Read(data []byte, maxAge time.Duration, now time.Time) (*plans.Plan, error) {
	var head struct {
		FormatVersion *int   `json:"format_version"`
		Checksum      string `json:"checksum"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("reading plan: not a plan file: %w", err)
	}
	if head.FormatVersion == nil {
		return nil, errors.New("reading plan: not a plan file (no format_version)")
	}
	if *head.FormatVersion != plans.FormatVersion {
		return nil, fmt.Errorf("plan format version %d is not supported (this nksrun reads %d)", *head.FormatVersion, plans.FormatVersion)
	}
	if head.Checksum == "" {
		return nil, fmt.Errorf("%w: no checksum (not written by nksrun plan -o)", ErrPlanEdited)
	}
	sum, err := documentChecksum(data)
	if err != nil {
		return nil, fmt.Errorf("reading plan: %w", err)
	}
	if sum != head.Checksum {
		return nil, ErrPlanEdited
	}
	var p plans.Plan
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("reading plan: %w", err)
	}
	age := now.Sub(p.CreatedAt)
	if age < -maxClockSkew {
		return nil, fmt.Errorf("%w: created %s in the future (clock skew?)", ErrPlanExpired, (-age).Round(time.Second))
	}
	if maxAge > 0 && age > maxAge {
		return nil, fmt.Errorf("%w: created %s ago (limit %s, --max-plan-age)", ErrPlanExpired, age.Round(time.Second), maxAge)
	}
	return &p, nil
}

// maxClockSkew is how far in the future a plan's created_at may be (plans
// made on another machine).
const maxClockSkew = 5 * time.Minute
