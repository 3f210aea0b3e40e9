package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

// listStream writes a list as its pages arrive, so that 100,000 VMs are
// never held at once: a table whose columns are as wide as the header and
// the first page need (later, longer cells widen their row only), or a
// JSON array item by item, byte for byte what writeAs writes for the
// whole list. YAML is collected and written at the end.
type listStream struct {
	out    io.Writer
	format string
	header []string
	widths []int
	n      int   // items written
	yaml   []any // YAML items, written by close
	err    error
}

func (a *app) listStream(cmd *cobra.Command, header ...string) (*listStream, error) {
	f, err := a.format()
	if err != nil {
		return nil, err
	}
	return &listStream{out: outw(cmd), format: f, header: header}, nil
}

// page writes a page: items for JSON and YAML, rows for the table.
func (s *listStream) page(items []any, rows [][]string) {
	if s.err != nil {
		return
	}
	switch s.format {
	case formatJSON:
		for _, it := range items {
			b, err := json.MarshalIndent(it, "  ", "  ")
			if err != nil {
				s.err = fmt.Errorf("cli: encode json: %w", err)
				return
			}
			sep := ",\n  "
			if s.n == 0 {
				sep = "[\n  "
			}
			s.write(sep + string(b))
			s.n++
		}
	case formatYAML:
		s.yaml = append(s.yaml, items...)
	default:
		if s.widths == nil {
			s.widths = make([]int, len(s.header))
			for _, r := range append([][]string{s.header}, rows...) {
				for i, c := range r {
					s.widths[i] = max(s.widths[i], utf8.RuneCountInString(c))
				}
			}
			s.row(s.header)
		}
		for _, r := range rows {
			s.row(r)
		}
		s.n += len(rows)
	}
}

// row writes cells padded as text/tabwriter pads them (two spaces after
// the widest cell of each column, none after the last).
func (s *listStream) row(cells []string) {
	var b strings.Builder
	for i, c := range cells {
		b.WriteString(c)
		if i < len(cells)-1 {
			b.WriteString(strings.Repeat(" ", max(s.widths[i]-utf8.RuneCountInString(c), 0)+2))
		}
	}
	b.WriteByte('\n')
	s.write(b.String())
}

func (s *listStream) write(text string) {
	if s.err == nil {
		_, s.err = io.WriteString(s.out, text)
	}
}

// close ends the list (an empty one is "[]" or a header alone).
func (s *listStream) close() error {
	switch s.format {
	case formatJSON:
		if s.n == 0 {
			s.write("[]\n")
		} else {
			s.write("\n]\n")
		}
	case formatYAML:
		if s.err == nil {
			items := s.yaml
			if items == nil {
				items = []any{}
			}
			s.err = writeAs(s.out, formatYAML, items, nil)
		}
	default:
		if s.widths == nil {
			s.page(nil, nil)
		}
	}
	return s.err
}
