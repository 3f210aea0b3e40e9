package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/backup"
	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// BenchmarkBackup measures the figures of docs/backup.md on a 4 GiB disk
// holding 2 GiB of data (the first 2 GiB of /usr's files, a realistic
// mix), through the real path: QEMU fleecing + dirty bitmaps over NBD,
// zstd, XChaCha20-Poly1305, a directory repository.
//
//	go test -run XXX -bench Backup -benchtime 1x -timeout 90m ./internal/hypervisor/qemu/
//
// VPOOL_BENCH_RUNS runs per condition (default 3): "idle" (whatever else
// the machine runs; the load average is printed beside every run) and
// "load" (two busy loops beside it). Each run, beside vpool, runs borg
// (Debian's borgbackup) on the same disk contents, if installed.
func BenchmarkBackup(b *testing.B) {
	g := heavy(b)
	data := benchData(b, 2<<30)
	runs := 3
	if v := os.Getenv("VPOOL_BENCH_RUNS"); v != "" {
		fmt.Sscan(v, &runs)
	}
	for _, cond := range []string{"idle", "load"} {
		b.Run(cond, func(b *testing.B) {
			if cond == "load" {
				stop := busyLoops(b, 2)
				defer stop()
			}
			d := newDriver(b, testConfig(b, shortTempDir(b)))
			var rs []benchRun
			for i := 0; i < runs; i++ {
				r := runBackupBench(b, d, g.Image(), data, fmt.Sprintf("%s%d", cond, i))
				b.Logf("run %d (load %s): %s", i, r.load, r)
				rs = append(rs, r)
			}
			report(b, rs)
		})
	}
}

type benchRun struct {
	load                                 string
	fullMiBs, incrS, incrReadX, dedupPct float64
	fullCPU, borgFullCPU                 float64 // MiB per CPU-second (this process; borg's)
	restoreMiBs, verifyMiBs              float64
	borgFullMiBs, borgIncrS, borgDedup   float64
	borgRestoreMiBs, borgVerifyMiBs      float64
	haveBorg                             bool
}

func (r benchRun) String() string {
	s := fmt.Sprintf("full %.0f MiB/s (%.0f MiB/CPU-s), incremental %.1fs reading %.2fx the change, clone %.2f%% of the first, restore %.0f MiB/s, verify %.0f MiB/s",
		r.fullMiBs, r.fullCPU, r.incrS, r.incrReadX, r.dedupPct, r.restoreMiBs, r.verifyMiBs)
	if r.haveBorg {
		s += fmt.Sprintf(" | borg: full %.0f MiB/s (%.0f MiB/CPU-s), incremental %.1fs, clone %.2f%%, restore %.0f MiB/s, verify %.0f MiB/s",
			r.borgFullMiBs, r.borgFullCPU, r.borgIncrS, r.borgDedup, r.borgRestoreMiBs, r.borgVerifyMiBs)
	}
	return s
}

func report(b *testing.B, rs []benchRun) {
	metric := func(unit string, f func(benchRun) float64) {
		var xs []float64
		for _, r := range rs {
			xs = append(xs, f(r))
		}
		sort.Float64s(xs)
		b.ReportMetric(median(xs), unit)
		b.Logf("%-28s min %8.2f  median %8.2f  max %8.2f", unit, xs[0], median(xs), xs[len(xs)-1])
	}
	metric("full-MiB/s", func(r benchRun) float64 { return r.fullMiBs })
	metric("full-MiB/CPU-s", func(r benchRun) float64 { return r.fullCPU })
	metric("incr-s", func(r benchRun) float64 { return r.incrS })
	metric("incr-read/changed", func(r benchRun) float64 { return r.incrReadX })
	metric("clone-%-of-first", func(r benchRun) float64 { return r.dedupPct })
	metric("restore-MiB/s", func(r benchRun) float64 { return r.restoreMiBs })
	metric("verify-MiB/s", func(r benchRun) float64 { return r.verifyMiBs })
	if rs[0].haveBorg {
		metric("borg-full-MiB/s", func(r benchRun) float64 { return r.borgFullMiBs })
		metric("borg-full-MiB/CPU-s", func(r benchRun) float64 { return r.borgFullCPU })
		metric("borg-incr-s", func(r benchRun) float64 { return r.borgIncrS })
		metric("borg-clone-%-of-first", func(r benchRun) float64 { return r.borgDedup })
		metric("borg-restore-MiB/s", func(r benchRun) float64 { return r.borgRestoreMiBs })
		metric("borg-verify-MiB/s", func(r benchRun) float64 { return r.borgVerifyMiBs })
	}
	b.ReportMetric(0, "ns/op")
}

const benchDisk = 4 << 30

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// runBackupBench is one run: fill, full, 5 % change, incremental, a
// clone's backup, restore, verify; then borg on the same contents.
func runBackupBench(b *testing.B, d *Driver, img *hypervisor.Image, data string, tag string) benchRun {
	ctx := context.Background()
	r := benchRun{load: loadavg()}
	mib := func(n int64, t time.Duration) float64 { return float64(n) / (1 << 20) / t.Seconds() }
	rp, err := repo.Create(ctx, &repo.Dir{Root: filepath.Join(b.TempDir(), "repo")}, repo.Options{Key: repo.GenerateKey(), Cluster: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	src := benchVM(b, d, img, "src-"+tag, data)
	mustDo(b, "Start", d.Start(ctx, src))
	waitReady(b, d, src)
	t0, cpu0 := time.Now(), cpuTime()
	full, err := backup.Backup(ctx, d, src, rp, backup.Job{ID: "full-" + tag})
	if err != nil {
		b.Fatal(err)
	}
	r.fullMiBs = mib(full.Stats.ReadBytes, time.Since(t0))
	r.fullCPU = mib(full.Stats.ReadBytes, cpuTime()-cpu0)
	// 5 % of the disk changes: 1 MiB writes at random places.
	rng := rand.New(rand.NewPCG(uint64(len(tag)), 7))
	changed := map[int64]bool{}
	for len(changed) < benchDisk/(1<<20)/20 {
		off := rng.Int64N(benchDisk>>20) << 20
		guestWrite(b, d, src, "root", off, 1<<20, byte(len(changed)))
		changed[off] = true
	}
	t0 = time.Now()
	inc, err := backup.Backup(ctx, d, src, rp, backup.Job{ID: "incr-" + tag, Parent: full})
	if err != nil {
		b.Fatal(err)
	}
	r.incrS = time.Since(t0).Seconds()
	r.incrReadX = float64(inc.Stats.ReadBytes) / float64(int64(len(changed))<<20)
	mustDo(b, "Stop", d.Stop(ctx, src, 10*time.Second))
	clone := benchVM(b, d, img, "clone-"+tag, data)
	cm, err := backup.Backup(ctx, d, clone, rp, backup.Job{ID: "clone-" + tag})
	if err != nil {
		b.Fatal(err)
	}
	r.dedupPct = 100 * float64(cm.Stats.NewBytes) / float64(full.Stats.NewBytes)
	dst := benchVM(b, d, img, "dst-"+tag, "")
	st, err := backup.Restore(ctx, d, dst, rp, full, nil)
	if err != nil {
		b.Fatal(err)
	}
	r.restoreMiBs = mib(st.Bytes, st.Duration)
	t0 = time.Now()
	v, err := rp.Verify(ctx, nil, nil)
	if err != nil || !v.OK() {
		b.Fatalf("verify: %+v %v", v, err)
	}
	r.verifyMiBs = mib(v.Bytes, time.Since(t0))
	if borg, err := exec.LookPath("borg"); err == nil {
		r.haveBorg = true
		borgRun(b, d, borg, src, clone, &r)
	} else {
		b.Logf("borg not installed (apt-get install borgbackup): no comparison")
	}
	for _, id := range []string{src, clone, dst} {
		d.Delete(ctx, id)
	}
	return r
}

// benchVM creates a stopped VM with a 4 GiB disk, filled with data when
// given (written through a restore session).
func benchVM(b *testing.B, d *Driver, img *hypervisor.Image, name, data string) string {
	ctx := context.Background()
	cfg := hypervisor.VMConfig{ID: "bench." + name, Name: name, Project: "bench",
		Spec: model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB, Disks: []model.Disk{{Name: "root", Size: benchDisk}}}, Image: img}
	mustDo(b, "Create", d.Create(ctx, cfg))
	if data == "" {
		return cfg.ID
	}
	s, err := d.OpenRestore(ctx, cfg.ID)
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(data)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	for off := int64(0); ; {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			mustDo(b, "fill", s.WriteAt(ctx, "root", buf[:n], off))
			off += int64(n)
		}
		if err != nil {
			break
		}
	}
	mustDo(b, "fill close", s.Close(ctx))
	return cfg.ID
}

// benchData is a file of the first size bytes of /usr's regular files in
// path order, cached between runs.
func benchData(b *testing.B, size int64) string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, "vpool", "bench", fmt.Sprintf("usr-%d.bin", size))
	if st, err := os.Stat(path); err == nil && st.Size() == size {
		return path
	}
	os.MkdirAll(filepath.Dir(path), 0o755)
	out, err := os.Create(path + ".tmp")
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	filepath.WalkDir("/usr", func(p string, e fs.DirEntry, err error) error {
		if err != nil || n >= size || !e.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		c, _ := io.CopyN(out, f, size-n)
		f.Close()
		n += c
		if n >= size {
			return filepath.SkipAll
		}
		return nil
	})
	if err := out.Close(); err != nil || n < size {
		b.Fatalf("bench data: %d of %d bytes (%v)", n, size, err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		b.Fatal(err)
	}
	return path
}

// busyLoops starts n shell processes spinning; stop kills them.
func busyLoops(b *testing.B, n int) func() {
	var cmds []*exec.Cmd
	for i := 0; i < n; i++ {
		c := exec.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	time.Sleep(2 * time.Second)
	return func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}
}

// borgRun measures borg (Debian's borgbackup) on the same disks, exported
// raw: "full" is the clone's image (the original data), "incremental" the
// source after its 5 % change, "clone" the original data again under a
// second archive. Compression zstd level 1 and repokey-blake2 encryption,
// the nearest to vpool's settings.
func borgRun(b *testing.B, d *Driver, borg, src, clone string, r *benchRun) {
	dir := b.TempDir()
	raw := func(id, name string) string {
		v, err := d.get(id)
		if err != nil {
			b.Fatal(err)
		}
		ch := v.rec.Disks[0].chain()
		out := filepath.Join(dir, name)
		if o, err := exec.Command(d.cfg.QEMUImg, "convert", "-O", "raw", ch[len(ch)-1].File, out).CombinedOutput(); err != nil {
			b.Fatalf("qemu-img convert: %v %s", err, o)
		}
		return out
	}
	orig, changed := raw(clone, "orig.raw"), raw(src, "changed.raw")
	repoDir := filepath.Join(dir, "borg")
	env := append(os.Environ(), "BORG_PASSPHRASE=bench", "BORG_BASE_DIR="+filepath.Join(dir, "home"))
	var lastCPU time.Duration
	run := func(args ...string) ([]byte, time.Duration) {
		c := exec.Command(borg, args...)
		c.Env, c.Dir = env, dir
		t0 := time.Now()
		out, err := c.Output()
		if err != nil {
			b.Fatalf("borg %v: %v %s", args, err, out)
		}
		lastCPU = c.ProcessState.UserTime() + c.ProcessState.SystemTime()
		return out, time.Since(t0)
	}
	run("init", "-e", "repokey-blake2", repoDir)
	dedup := func(out []byte) float64 {
		var s struct {
			Archive struct {
				Stats struct {
					Dedup float64 `json:"deduplicated_size"`
				} `json:"stats"`
			} `json:"archive"`
		}
		if err := jsonUnmarshal(out, &s); err != nil {
			b.Fatalf("borg json: %v", err)
		}
		return s.Archive.Stats.Dedup
	}
	const data = 2 << 30
	out, t := run("create", "--json", "--compression", "zstd,1", repoDir+"::full", "orig.raw")
	r.borgFullMiBs = data / (1 << 20) / t.Seconds()
	r.borgFullCPU = data / (1 << 20) / lastCPU.Seconds()
	first := dedup(out)
	_, t = run("create", "--json", "--compression", "zstd,1", repoDir+"::incr", "changed.raw")
	r.borgIncrS = t.Seconds()
	os.Rename(orig, orig+".2")
	os.Mkdir(filepath.Join(dir, "again"), 0o755)
	os.Rename(orig+".2", filepath.Join(dir, "again", "orig.raw"))
	c := exec.Command(borg, "create", "--json", "--compression", "zstd,1", repoDir+"::clone", "orig.raw")
	c.Env, c.Dir = env, filepath.Join(dir, "again")
	out, err := c.Output()
	if err != nil {
		b.Fatalf("borg create clone: %v", err)
	}
	r.borgDedup = 100 * dedup(out) / first
	os.Remove(filepath.Join(dir, "again", "orig.raw"))
	os.Remove(changed)
	ext := filepath.Join(dir, "extract")
	os.Mkdir(ext, 0o755)
	c = exec.Command(borg, "extract", "--sparse", repoDir+"::full")
	c.Env, c.Dir = env, ext
	t0 := time.Now()
	if o, err := c.CombinedOutput(); err != nil {
		b.Fatalf("borg extract: %v %s", err, o)
	}
	r.borgRestoreMiBs = benchDisk / (1 << 20) / time.Since(t0).Seconds()
	os.RemoveAll(ext)
	info, _ := run("info", "--json", repoDir)
	var is struct {
		Cache struct {
			Stats struct {
				Unique float64 `json:"unique_size"`
			} `json:"stats"`
		} `json:"cache"`
	}
	jsonUnmarshal(info, &is)
	_, t = run("check", "--verify-data", repoDir)
	r.borgVerifyMiBs = is.Cache.Stats.Unique / (1 << 20) / t.Seconds()
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// cpuTime is this process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
