package model

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Scaling group limits and defaults: scale out fast, scale in slowly.
const (
	MaxGroupSize            = 1000
	MaxGroupSchedules       = 32
	DefaultScaleOutCooldown = 30  // s
	DefaultScaleInCooldown  = 300 // s
	MaxCooldown             = 86400
	// GroupLabel marks a VM as a member of a scaling group (its value is
	// the group's name).
	GroupLabel = "vpool.io/group"
)

// Group member states.
const (
	GroupMemberPending   = "pending"    // created, not yet running
	GroupMemberInService = "in-service" // running: a balancer may send it traffic
	GroupMemberDraining  = "draining"   // leaving: taken out of balancers first
	GroupMemberDeleting  = "deleting"   // drained: its VM is being deleted
)

// ScalingGroup keeps a number of VMs made from one template: at least
// Min, at most Max, sized by its members' CPU use (target tracking) and
// by schedules; failed members are replaced.
type ScalingGroup struct {
	Meta
	Spec   GroupSpec   `json:"spec"`
	Status GroupStatus `json:"status"`
}

// Key returns "project/name".
func (g *ScalingGroup) Key() string { return g.Project + "/" + g.Name }

// GroupSpec is what the user asked for.
type GroupSpec struct {
	// Template is the spec of every member; the controller adds the
	// group's label and anti-affinity.
	Template VMSpec `json:"template"`
	Min      int    `json:"min"`
	Max      int    `json:"max"`
	// TargetCPU is the members' mean CPU use (percent of their vCPUs)
	// that the group's size tracks; 0 turns target tracking off.
	TargetCPU float64 `json:"targetCpuPercent,omitempty"`
	// LB names a balancer of the project the members join when running.
	LB string `json:"lb,omitempty"`
	// AntiAffinity is soft (default: spread where possible) or hard
	// (never two members on one host).
	AntiAffinity string `json:"antiAffinity,omitempty"`
	// Cooldowns (seconds) between two scale-outs (default 30) and before
	// a scale-in after any scaling (default 300).
	ScaleOutCooldown int `json:"scaleOutCooldownSeconds,omitempty"`
	ScaleInCooldown  int `json:"scaleInCooldownSeconds,omitempty"`
	// Schedules override Min and Max during time windows (UTC).
	Schedules   []GroupSchedule `json:"schedules,omitempty"`
	Description string          `json:"description,omitempty"`
}

// GroupSchedule sets the group's bounds during a daily window (UTC). The
// first schedule whose window holds the time applies.
type GroupSchedule struct {
	Name string `json:"name"`
	// Days are mon..sun (empty: every day); Start and End are HH:MM, End
	// after Start, or before it for a window across midnight.
	Days  []string `json:"days,omitempty"`
	Start string   `json:"start"`
	End   string   `json:"end"`
	Min   int      `json:"min"`
	Max   int      `json:"max"`
}

// GroupStatus is what the group controller decided.
type GroupStatus struct {
	// Desired is the size the group is kept at.
	Desired int           `json:"desired"`
	Members []GroupMember `json:"members,omitempty"`
	// Next numbers the next member's name (NAME-<Next>).
	Next         int        `json:"next,omitempty"`
	LastScaleOut *time.Time `json:"lastScaleOut,omitempty"`
	LastScaleIn  *time.Time `json:"lastScaleIn,omitempty"`
	// CPU is the members' mean CPU use at the last decision.
	CPU float64 `json:"cpuPercent,omitempty"`
	// Reason is the last decision's reason.
	Reason string `json:"reason,omitempty"`
	// Error is why the last action failed (quota, template), if it did.
	Error string `json:"error,omitempty"`
}

// GroupMember is one VM of the group.
type GroupMember struct {
	VM    string    `json:"vm"`
	State string    `json:"state"`
	Since time.Time `json:"since"`
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// Validate checks a group spec and fills its defaults; field names are
// "spec.*" (the template's "spec.template.*").
func (s *GroupSpec) Validate() error {
	if err := s.Template.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			return fieldErr(strings.Replace(fe.Field, "spec.", "spec.template.", 1), "%s", fe.Message)
		}
		return err
	}
	if p := s.Template.Placement; p.AffinityGroup != "" || p.Affinity != "" {
		return fieldErr("spec.template.placement.affinityGroup", "is the group's own: leave it out and set spec.antiAffinity (soft or hard)")
	}
	if s.Min < 0 || s.Min > MaxGroupSize {
		return fieldErr("spec.min", "%d is out of range: use 0 to %d", s.Min, MaxGroupSize)
	}
	if s.Max < 1 || s.Max > MaxGroupSize {
		return fieldErr("spec.max", "%d is out of range: use 1 to %d", s.Max, MaxGroupSize)
	}
	if s.Min > s.Max {
		return fieldErr("spec.min", "%d is more than max %d", s.Min, s.Max)
	}
	if s.TargetCPU < 0 || s.TargetCPU > 100 || s.TargetCPU != s.TargetCPU {
		return fieldErr("spec.targetCpuPercent", "%v is out of range: use 1 to 100 (0 turns target tracking off)", s.TargetCPU)
	}
	if s.TargetCPU > 0 && s.TargetCPU < 1 {
		return fieldErr("spec.targetCpuPercent", "%v is below 1: use 1 to 100", s.TargetCPU)
	}
	if err := validOptionalName("spec.lb", s.LB); err != nil {
		return err
	}
	switch s.AntiAffinity {
	case "":
		s.AntiAffinity = "soft"
	case "soft", "hard":
	default:
		return fieldErr("spec.antiAffinity", "%s is not an anti-affinity: use soft or hard", quoteShort(s.AntiAffinity))
	}
	for _, c := range []struct {
		f string
		v *int
		d int
	}{{"scaleOutCooldownSeconds", &s.ScaleOutCooldown, DefaultScaleOutCooldown}, {"scaleInCooldownSeconds", &s.ScaleInCooldown, DefaultScaleInCooldown}} {
		if *c.v == 0 {
			*c.v = c.d
		}
		if *c.v < 1 || *c.v > MaxCooldown {
			return fieldErr("spec."+c.f, "%d is out of range: use 1 to %d", *c.v, MaxCooldown)
		}
	}
	if len(s.Schedules) > MaxGroupSchedules {
		return fieldErr("spec.schedules", "has %d schedules, more than %d", len(s.Schedules), MaxGroupSchedules)
	}
	for i := range s.Schedules {
		if err := s.Schedules[i].validate(fmt.Sprintf("spec.schedules[%d]", i)); err != nil {
			return err
		}
	}
	if len(s.Description) > MaxDescription {
		return fieldErr("spec.description", "is %d bytes, more than %d", len(s.Description), MaxDescription)
	}
	return nil
}

func (sc *GroupSchedule) validate(f string) error {
	if err := ValidName(f+".name", sc.Name); err != nil {
		return err
	}
	for j, d := range sc.Days {
		if _, ok := weekdays[d]; !ok {
			return fieldErr(fmt.Sprintf("%s.days[%d]", f, j), "%s is not a day: use mon, tue, wed, thu, fri, sat or sun", quoteShort(d))
		}
	}
	s, ok1 := ClockMinutes(sc.Start)
	e, ok2 := ClockMinutes(sc.End)
	if !ok1 {
		return fieldErr(f+".start", "%s is not a time of day: write HH:MM (UTC), e.g. 08:00", quoteShort(sc.Start))
	}
	if !ok2 {
		return fieldErr(f+".end", "%s is not a time of day: write HH:MM (UTC), e.g. 18:00", quoteShort(sc.End))
	}
	if s == e {
		return fieldErr(f+".end", "equals start: a window needs a length")
	}
	if sc.Min < 0 || sc.Min > MaxGroupSize {
		return fieldErr(f+".min", "%d is out of range: use 0 to %d", sc.Min, MaxGroupSize)
	}
	if sc.Max < 1 || sc.Max > MaxGroupSize {
		return fieldErr(f+".max", "%d is out of range: use 1 to %d", sc.Max, MaxGroupSize)
	}
	if sc.Min > sc.Max {
		return fieldErr(f+".min", "%d is more than max %d", sc.Min, sc.Max)
	}
	return nil
}

// ClockMinutes parses HH:MM into minutes after midnight.
func ClockMinutes(s string) (int, bool) {
	t, err := time.Parse("15:04", s)
	if err != nil || len(s) != 5 {
		return 0, false
	}
	return t.Hour()*60 + t.Minute(), true
}

// Weekday parses mon..sun.
func Weekday(s string) (time.Weekday, bool) {
	d, ok := weekdays[s]
	return d, ok
}
