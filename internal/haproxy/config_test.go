package haproxy

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestRenderConfigGolden(t *testing.T) {
	check := model.LBHealthCheck{}
	spec := model.LBSpec{Network: "lan", Listen: 80, HealthCheck: check}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, alg := range []string{model.LBRoundRobin, model.LBLeastConn, model.LBSource} {
		t.Run(alg, func(t *testing.T) {
			s := Spec{ID: "p/web", VIP: netip.MustParseAddr("10.1.0.100"), Listen: 80, MemberPort: 8080, Algorithm: alg,
				Check: spec.HealthCheck, Drain: 30 * time.Second, Members: []Member{
					{Name: "web-2", IP: netip.MustParseAddr("10.1.0.12"), Draining: true},
					{Name: "web-1", IP: netip.MustParseAddr("10.1.0.11")},
				}}
			got := RenderConfig(s, "/run/vpool/lb/x")
			path := filepath.Join("testdata", alg+".cfg")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("config differs from %s (go test -update):\n%s", path, got)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	csv := "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\n" +
		"vip,FRONTEND,,,3,5,50000,10,0,0,0,0,0,,,,,OPEN,\n" +
		"members,web-1,0,0,2,3,,7,0,0,,0,,0,0,0,0,UP,1\n" +
		"members,web-2,0,0,1,1,,3,0,0,,0,,0,0,0,0,DOWN,1\n" +
		"members,web-3,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP 1/2,0\n" +
		"members,BACKEND,0,0,3,5,5000,10,0,0,0,0,,0,0,0,0,UP,2\n"
	got := parseStat(csv)
	want := map[string]ServerStat{"web-1": {"up", 2, 1}, "web-2": {"down", 1, 1}, "web-3": {"up", 0, 0}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %+v, want %+v", k, got[k], v)
		}
	}
}
