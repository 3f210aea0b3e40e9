package repo

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// usrData returns n bytes of /usr's files (a realistic mix to compress).
func usrData(b *testing.B, n int) []byte {
	out := make([]byte, 0, n)
	filepath.WalkDir("/usr", func(p string, e fs.DirEntry, err error) error {
		if err != nil || len(out) >= n || !e.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		buf, _ := io.ReadAll(io.LimitReader(f, int64(n-len(out))))
		f.Close()
		out = append(out, buf...)
		if len(out) >= n {
			return filepath.SkipAll
		}
		return nil
	})
	return out
}

// BenchmarkWriterPut measures the repository side of a backup alone
// (HMAC name, zstd, XChaCha20-Poly1305, a file per chunk, one flush),
// one goroutine: MiB/s of plaintext; on a directory and on an S3 bucket
// of the loopback gofakes3 server (in memory: the figure is the HTTP,
// signing and client cost, not a real object store's).
func BenchmarkWriterPut(b *testing.B) {
	data := usrData(b, 256<<20)
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) { benchWriterPut(b, be.mk, data) })
	}
}

func benchWriterPut(b *testing.B, mk newBackend, data []byte) {
	ctx := context.Background()
	var total time.Duration
	var bytes int64
	for i := 0; i < b.N; i++ {
		r, err := Create(ctx, mk(b), Options{Key: GenerateKey(), Cluster: "c"})
		if err != nil {
			b.Fatal(err)
		}
		w, err := r.NewWriter(ctx, "b1")
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		for off := 0; off+DefaultChunkSize <= len(data); off += DefaultChunkSize {
			if _, _, err := w.Put(ctx, data[off:off+DefaultChunkSize]); err != nil {
				b.Fatal(err)
			}
			bytes += DefaultChunkSize
		}
		if err := w.Commit(ctx, &Manifest{}); err != nil {
			b.Fatal(err)
		}
		total += time.Since(t0)
	}
	b.ReportMetric(float64(bytes)/(1<<20)/total.Seconds(), "MiB/s")
}
