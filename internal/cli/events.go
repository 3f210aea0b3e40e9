package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

func (a *app) eventsCmd() *cobra.Command {
	var follow, all bool
	var since string
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List events, or follow them as they happen (-f)",
		Example: `  vpool events --since 10m
  vpool events -f --project team-a
  vpool events -f -o json | jq .`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sinceID, cutoff, err := parseSince(since, a.env.now())
			if err != nil {
				return err
			}
			format, err := a.format()
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			project := a.cfg.Project
			if all {
				project = client.AllProjects
			}
			ctx := cmd.Context()
			evs, err := c.ListEvents(ctx, sinceID, project)
			if err != nil {
				return err
			}
			sort.SliceStable(evs, func(i, j int) bool { return evs[i].ID < evs[j].ID })
			kept := make([]model.Event, 0, len(evs))
			last := sinceID
			for _, ev := range evs {
				last = max(last, ev.ID)
				if !ev.Time.Before(cutoff) {
					kept = append(kept, ev)
				}
			}
			if !follow {
				return a.print(cmd, kept, func(w io.Writer) {
					for _, ev := range kept {
						io.WriteString(w, eventLine(ev))
					}
				})
			}
			out := outw(cmd)
			for _, ev := range kept {
				if err := writeStreamed(out, format, ev); err != nil {
					return err
				}
			}
			stream, errs := c.FollowEvents(ctx, last, project)
			for ev := range stream {
				if ev.Time.Before(cutoff) {
					continue
				}
				if err := writeStreamed(out, format, ev); err != nil {
					return err
				}
			}
			return <-errs // nil when ctx ended (Ctrl-C)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing events as they happen")
	cmd.Flags().BoolVarP(&all, "all-projects", "A", false, "events of every project (admins)")
	cmd.Flags().StringVar(&since, "since", "", "only events after this event ID, within this duration (10m), or after this time (RFC 3339)")
	return cmd
}

// parseSince reads --since: an event ID, a duration back from now or a
// time. It returns the ID to ask the server for and the time before which
// events are dropped.
func parseSince(s string, now time.Time) (int64, time.Time, error) {
	if s == "" {
		return 0, time.Time{}, nil
	}
	if id, err := strconv.ParseInt(s, 10, 64); err == nil && id >= 0 {
		return id, time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return 0, now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return 0, t, nil
	}
	return 0, time.Time{}, usagef("--since: %q is not an event ID, a duration (e.g. 10m) or a time (RFC 3339)", s)
}

// eventLine renders one event as "TIME  KIND  OBJECT  MESSAGE\n"; a
// transition shows as "from -> to", after the message when there is one.
func eventLine(ev model.Event) string {
	msg := ev.Message
	if tr := transition(ev.From, ev.To); tr != "" {
		if msg == "" {
			msg = tr
		} else {
			msg += " [" + tr + "]"
		}
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s\n", ev.Time.UTC().Format("2006-01-02T15:04:05Z"), orDash(ev.Kind), orDash(ev.Object), msg)
}

func transition(from, to string) string {
	switch {
	case from != "" && to != "":
		return from + " -> " + to
	case to != "":
		return "-> " + to
	case from != "":
		return from + " ->"
	}
	return ""
}

// writeStreamed writes one followed event: a line (table, columns
// separated by two spaces: a stream cannot be aligned), a compact JSON
// object per line (json, i.e. NDJSON) or a YAML document (yaml).
func writeStreamed(w io.Writer, format string, ev model.Event) error {
	var b []byte
	var err error
	switch format {
	case formatJSON:
		b, err = json.Marshal(ev)
		b = append(b, '\n')
	case formatYAML:
		b, err = yaml.Marshal(ev)
		b = append([]byte("---\n"), b...)
	default:
		b = []byte(strings.ReplaceAll(eventLine(ev), "\t", "  "))
	}
	if err != nil {
		return fmt.Errorf("cli: encode event: %w", err)
	}
	_, err = w.Write(b)
	return err
}
