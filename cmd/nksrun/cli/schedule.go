package cli

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// A schedule is checked before it is printed: a crontab silently ignores a
// line it cannot parse (cron logs it, nobody reads that) and a CronJob with
// a bad schedule is refused only when applied. The syntax accepted is the
// common part of cronie/Vixie cron and Kubernetes' CronJob (robfig/cron's
// standard parser): five fields of numbers, names (jan-dec, sun-sat),
// '*', ranges a-b, steps */n and a-b/n, lists; or one of the @ macros both
// know. Not accepted, because one of the two rejects or misreads it: a/n
// without a range, '?', L/W/#, @every, @reboot, CRON_TZ=.

type cronField struct {
	name     string
	min, max int
	names    []string // names[i] is min+i
}

var cronFields = []cronField{
	{name: "minute", min: 0, max: 59},
	{name: "hour", min: 0, max: 23},
	{name: "day of month", min: 1, max: 31},
	{name: "month", min: 1, max: 12, names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}},
	{name: "day of week", min: 0, max: 6, names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}},
}

var cronMacros = map[string]bool{"@yearly": true, "@annually": true, "@monthly": true, "@weekly": true, "@daily": true, "@midnight": true, "@hourly": true}

// checkSchedule validates s. forCrontab also accepts 7 for Sunday (cron
// does, the CronJob controller does not).
func checkSchedule(s string, forCrontab bool) error {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "@") {
		if cronMacros[s] {
			return nil
		}
		return fmt.Errorf("--schedule %q: unknown macro (want @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually)", s)
	}
	f := strings.Fields(s)
	if len(f) != 5 {
		return fmt.Errorf("--schedule %q: want 5 fields (minute hour day-of-month month day-of-week) or a macro such as @daily", s)
	}
	for i, x := range f {
		cf := cronFields[i]
		if i == 4 && forCrontab {
			cf.max = 7
		}
		if err := cf.check(x); err != nil {
			return fmt.Errorf("--schedule %q: %s field %q: %v", s, cf.name, x, err)
		}
	}
	return nil
}

func (cf cronField) check(field string) error {
	for _, item := range strings.Split(field, ",") {
		if item == "" {
			return fmt.Errorf("empty list item")
		}
		rng, step, hasStep := strings.Cut(item, "/")
		if hasStep {
			n, err := strconv.Atoi(step)
			if err != nil || n < 1 {
				return fmt.Errorf("step %q: want a positive number", step)
			}
			if n > cf.max-cf.min+1 {
				return fmt.Errorf("step %d is larger than the field's range %d-%d", n, cf.min, cf.max)
			}
		}
		if rng == "*" {
			continue
		}
		lo, hi, isRange := strings.Cut(rng, "-")
		a, err := cf.value(lo)
		if err != nil {
			return err
		}
		if !isRange {
			if hasStep {
				return fmt.Errorf("%q: a step needs a range (%s-%d/%s) or * (*/%s)", item, lo, cf.max, step, step)
			}
			continue
		}
		b, err := cf.value(hi)
		if err != nil {
			return err
		}
		if a > b {
			return fmt.Errorf("range %q runs backwards", rng)
		}
	}
	return nil
}

func (cf cronField) value(s string) (int, error) {
	for i, n := range cf.names {
		if strings.EqualFold(s, n) {
			return cf.min + i, nil
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil || s == "" || s[0] == '+' || s[0] == '-' {
		if cf.names != nil {
			return 0, fmt.Errorf("%q is not a number or a name (%s...%s)", s, cf.names[0], cf.names[len(cf.names)-1])
		}
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if v < cf.min || v > cf.max {
		return 0, fmt.Errorf("%d is out of range %d-%d", v, cf.min, cf.max)
	}
	return v, nil
}

// defaultSchedule is a runbook's default: daily, at a time between 00:00
// and 05:59 derived from its name, so that the runbooks of one cluster do
// not all connect to every node at the same minute, and the same runbook
// always gets the same time.
func defaultSchedule(runbook string) string {
	h := fnv.New32a()
	h.Write([]byte(runbook))
	v := h.Sum32()
	return fmt.Sprintf("%d %d * * *", v%60, (v/60)%6)
}
