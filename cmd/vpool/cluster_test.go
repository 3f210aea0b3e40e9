package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/spf13/cobra"
)

func TestServerClusterFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("vpool1.from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		args      []string
		env       string
		wantJoin  []string
		wantToken string
		err       bool
	}{
		{name: "one server", args: nil},
		{name: "join with a token file", args: []string{"--join", "https://a:1, https://b:1", "--join-token-file", file, "--peer-url", "https://c:2380"},
			wantJoin: []string{"https://a:1", "https://b:1"}, wantToken: "vpool1.from-file"},
		{name: "join with the environment", args: []string{"--join", "https://a:1"}, env: "vpool1.env",
			wantJoin: []string{"https://a:1"}, wantToken: "vpool1.env"},
		{name: "a token file without --join", args: []string{"--join-token-file", file}, err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("VPOOL_JOIN_TOKEN", tc.env)
			cmd := &cobra.Command{Use: "server"}
			get := serverClusterFlags(cmd)
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			_, _, join, tok, err := get(slog.New(slog.DiscardHandler))
			if (err != nil) != tc.err || !slices.Equal(join, tc.wantJoin) || tok != tc.wantToken {
				t.Fatalf("join %v, token %q, err %v; want %v, %q, error %v", join, tok, err, tc.wantJoin, tc.wantToken, tc.err)
			}
		})
	}
}
