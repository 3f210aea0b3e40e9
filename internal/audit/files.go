package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Export files hold one record per line: the exact stored bytes (JSON
// has no raw newlines), in chain order. A file is only ever appended to;
// a run of files verifies as one chain, each file after the one before.

// MaxLine bounds one record in a file.
const MaxLine = 1 << 20

// ReadRecords reads the records of an export file.
func ReadRecords(r io.Reader) ([][]byte, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), MaxLine)
	var out [][]byte
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		out = append(out, append([]byte(nil), line...))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("audit: read records: %w", err)
	}
	return out, nil
}

// LastRecord returns the sequence number and hash of the last record of
// an export file (0 and "" for an empty or missing file).
func LastRecord(path string) (int64, string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	recs, err := ReadRecords(f)
	if err != nil || len(recs) == 0 {
		return 0, "", err
	}
	last := recs[len(recs)-1]
	es := Verify(Input{Records: [][]byte{last}, AnchorTrusted: true})
	if es.Bad != nil {
		return 0, "", fmt.Errorf("audit: the last line of %s is not a record", path)
	}
	return es.Last, Hash(last), nil
}

// FileInput is a verification of export files.
type FileInput struct {
	Paths []string // in chain order
	Key   ed25519.PublicKey
	// Head, Now and MaxHeadAge check the end of the last file (optional).
	Head       *model.AuditSignature
	Now        time.Time
	MaxHeadAge time.Duration
}

// VerifyFiles verifies export files as one chain: each file's first
// record must follow the last record of the file before. A Finding names
// the file in its detail.
func VerifyFiles(in FileInput) (*Report, error) {
	total := &Report{}
	var anchor *model.AuditSignature
	for i, p := range in.Paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		recs, err := ReadRecords(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("audit: %s: %w", p, err)
		}
		run := Input{Records: recs, Key: in.Key, Anchor: anchor, AnchorTrusted: true}
		if i == len(in.Paths)-1 {
			run.Head, run.Now, run.MaxHeadAge = in.Head, in.Now, in.MaxHeadAge
		} else {
			run.Partial = true
		}
		rep := Verify(run)
		merge(total, rep, i == 0)
		if rep.Bad != nil {
			rep.Bad.Detail += " (in " + p + ")"
			total.Bad = rep.Bad
			return total, nil
		}
		if len(recs) > 0 {
			anchor = &model.AuditSignature{Seq: rep.Last, Hash: Hash(recs[len(recs)-1])}
		}
	}
	return total, nil
}

func merge(total, rep *Report, first bool) {
	if first {
		total.First = rep.First
	}
	total.Notes = append(total.Notes, rep.Notes...)
	total.Records += rep.Records
	if rep.Records > 0 {
		total.Last = rep.Last
	}
	total.Checkpoints += rep.Checkpoints
	if rep.SignedThrough > total.SignedThrough {
		total.SignedThrough = rep.SignedThrough
	}
	total.Unsigned = rep.Unsigned
}
