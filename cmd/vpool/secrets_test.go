package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestJoinTokenSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("vpool1.from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte("vpool1.loose"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, flag, file, env string
		want, warn            string
		err                   bool
	}{
		{name: "file", file: file, env: "vpool1.env", want: "vpool1.from-file"},
		{name: "environment", env: "vpool1.env", want: "vpool1.env"},
		{name: "flag warns", flag: "vpool1.argv", want: "vpool1.argv", warn: "command line"},
		{name: "readable file warns", file: loose, want: "vpool1.loose", warn: "readable by others"},
		{name: "file and flag", flag: "x", file: file, err: true},
		{name: "missing file", file: filepath.Join(dir, "none"), err: true},
		{name: "none", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("VPOOL_JOIN_TOKEN", tt.env)
			var logs bytes.Buffer
			got, err := joinToken(tt.flag, tt.file, slog.New(slog.NewTextHandler(&logs, nil)))
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("joinToken = %q, %v", got, err)
			}
			if tt.warn == "" && logs.Len() > 0 || !strings.Contains(logs.String(), tt.warn) {
				t.Fatalf("logs %q, want a warning about %q", logs.String(), tt.warn)
			}
		})
	}
}

func TestEtcdPasswordSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, user, file, env, want string
		err                         bool
	}{
		{name: "no user", want: ""},
		{name: "file", user: "root", file: file, env: "other", want: "s3cret"},
		{name: "environment", user: "root", env: "from-env", want: "from-env"},
		{name: "user without password", user: "root", err: true},
		{name: "file without user", file: file, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("VPOOL_ETCD_PASSWORD", tt.env)
			got, err := etcdPassword(tt.user, tt.file)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("etcdPassword = %q, %v", got, err)
			}
		})
	}
}
