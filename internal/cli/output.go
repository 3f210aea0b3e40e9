package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/vpool/vpool/internal/model"
)

// Output formats.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatYAML  = "yaml"
)

func (a *app) format() (string, error) {
	switch f := strings.ToLower(a.output); f {
	case formatTable, "", "wide":
		return formatTable, nil
	case formatJSON, formatYAML:
		return f, nil
	default:
		return "", usagef("--output: %q is not a format (use table, json or yaml)", a.output)
	}
}

// print writes v as JSON or YAML, or calls table with a tabwriter for the
// table format.
func (a *app) print(cmd *cobra.Command, v any, table func(w io.Writer)) error {
	f, err := a.format()
	if err != nil {
		return err
	}
	return writeAs(outw(cmd), f, v, table)
}

func writeAs(out io.Writer, format string, v any, table func(w io.Writer)) error {
	switch format {
	case formatJSON:
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("cli: encode json: %w", err)
		}
		_, err = out.Write(append(b, '\n'))
		return err
	case formatYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return fmt.Errorf("cli: encode yaml: %w", err)
		}
		_, err = out.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// row writes tab-separated cells and a newline.
func row(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	io.WriteString(w, "\n")
}

// field writes "Name:\tvalue" for a describe view; empty values are skipped.
func field(w io.Writer, name string, value any) {
	s := fmt.Sprint(value)
	if s == "" || s == "<nil>" {
		return
	}
	fmt.Fprintf(w, "%s:\t%s\n", name, s)
}

// age renders how long ago t was, kubectl style: 45s, 12m, 5h, 3d.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < 2*time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	default:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
}

// stamp renders a time with its age, or "" for the zero time.
func stamp(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339) + " (" + age(now, t) + " ago)"
}

// kv renders a map as sorted k=v pairs.
func kv(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// orDash returns s, or "-" when s is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// used renders "used/limit", with "-" for an unlimited (zero) limit.
func used[T int | model.Bytes](u, limit T) string {
	l := "-"
	if limit != 0 {
		l = fmt.Sprint(limit)
	}
	return fmt.Sprint(u) + "/" + l
}

// num renders a float without trailing zeros.
func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
