package repo

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A real S3 service: SeaweedFS (github.com/seaweedfs/seaweedfs, Apache
// 2.0), an object store whose S3 gateway runs on its filer — not an S3
// fake. It is not a Go dependency of vpool (its module has ~500
// dependencies and takes many minutes to build on two cores), so these
// tests run only where its `weed` binary was built beforehand:
//
//	scripts/build-seaweedfs.sh      # prints the binary's path
//	VPOOL_SEAWEEDFS=/path/to/weed go test ./internal/backup/repo/
//
// Without VPOOL_SEAWEEDFS the "s3-seaweedfs" runs skip with that reason
// (also in CI, which does not build it: see docs/backup.md).

var (
	weedOnce sync.Once
	weedAddr string
	weedErr  error
	weedCmd  *exec.Cmd
	weedDir  string
)

// weedEndpoint starts one SeaweedFS server (master, volume, filer and
// S3 gateway in one process, on loopback ports) for the package's
// tests; TestMain stops it.
func weedEndpoint(t testing.TB) string {
	bin := os.Getenv("VPOOL_SEAWEEDFS")
	if bin == "" {
		t.Skip("no real S3 service: set VPOOL_SEAWEEDFS to a SeaweedFS weed binary (scripts/build-seaweedfs.sh builds one)")
	}
	weedOnce.Do(func() { weedAddr, weedErr = startWeed(bin) })
	if weedErr != nil {
		t.Fatalf("starting SeaweedFS: %v", weedErr)
	}
	return weedAddr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startWeed(bin string) (string, error) {
	dir, err := os.MkdirTemp("", "vpool-weed")
	if err != nil {
		return "", err
	}
	weedDir = dir
	ports := map[string]int{}
	for _, k := range []string{"master", "volume", "filer", "s3"} {
		// SeaweedFS also listens on port+10000 for gRPC: keep below.
		for {
			p, err := freePort()
			if err != nil {
				return "", err
			}
			if p < 50000 {
				ports[k] = p
				break
			}
		}
	}
	conf := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(conf, []byte(`{"identities":[{"name":"vpool","credentials":[{"accessKey":"test","secretKey":"test-secret"}],
"actions":["Admin","Read","Write","List","Tagging"]}]}`), 0o600); err != nil {
		return "", err
	}
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o700)
	weedCmd = exec.Command(bin, "server", "-dir="+data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		fmt.Sprintf("-master.port=%d", ports["master"]), fmt.Sprintf("-volume.port=%d", ports["volume"]),
		fmt.Sprintf("-filer.port=%d", ports["filer"]), "-s3", fmt.Sprintf("-s3.port=%d", ports["s3"]),
		"-s3.config="+conf, "-volume.max=0", "-master.volumeSizeLimitMB=64")
	logf, err := os.Create(filepath.Join(dir, "weed.log"))
	if err != nil {
		return "", err
	}
	weedCmd.Stdout, weedCmd.Stderr = logf, logf
	weedCmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := weedCmd.Start(); err != nil {
		return "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports["s3"])
	// Ready when a bucket can be made (the filer and a volume are up).
	deadline := time.Now().Add(90 * time.Second)
	for {
		s, err := NewS3(S3Config{Endpoint: addr, Insecure: true, Bucket: "vpool-probe", AccessKey: "test", SecretKey: "test-secret"})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = s.MakeBucket(ctx)
			if err == nil {
				err = s.Put(ctx, "probe", []byte("x"))
			}
			cancel()
		}
		if err == nil {
			return addr, nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "weed.log"))
			if len(b) > 2000 {
				b = b[len(b)-2000:]
			}
			return "", fmt.Errorf("SeaweedFS's S3 gateway at %s not ready after 90 s: %v\n%s", addr, err, b)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func stopWeed() {
	if weedCmd != nil && weedCmd.Process != nil {
		syscall.Kill(-weedCmd.Process.Pid, syscall.SIGKILL)
		weedCmd.Wait()
	}
	if weedDir != "" {
		os.RemoveAll(weedDir)
	}
}

// newWeedBackend is a fresh prefix in a fresh bucket of the SeaweedFS
// server.
func newWeedBackend(t testing.TB) Backend {
	t.Helper()
	addr := weedEndpoint(t)
	n := s3Seq.Add(1)
	s, err := NewS3(S3Config{Endpoint: addr, Insecure: true, Bucket: fmt.Sprintf("vpool-weed-%d", n),
		Prefix: "site/repo", AccessKey: "test", SecretKey: "test-secret"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MakeBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopWeed()
	os.Exit(code)
}
