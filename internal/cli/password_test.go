package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/api"
)

func TestSHA512Crypt(t *testing.T) {
	tests := []struct{ password, salt, want string }{
		// Ulrich Drepper's specification, and openssl passwd -6.
		{"Hello world!", "saltstring", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"},
		{"This is just a test", "toolongsaltstring", "$6$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"},
		{"a much longer password than sixty four bytes, to cover the loop over the digest of B......", "abc",
			"$6$abc$cWKR4h3/3Rg0nqBEi14ZiIfbJOofMhZLhpjjw.8WNAgLQ4Oc74T1ZHjL5Lx6KwPXMk6MIEZoaaSqpoHxc4TNJ."},
	}
	for _, tt := range tests {
		if got := sha512Crypt(tt.password, tt.salt); got != tt.want {
			t.Errorf("sha512Crypt(%q, %q) = %s, want %s", tt.password, tt.salt, got, tt.want)
		}
	}
	if s := newSalt(); len(s) != 16 || strings.Trim(s, cryptAlphabet) != "" {
		t.Errorf("newSalt() = %q", s)
	}
}

// The password reaches the server only as a hash in the user data, merged
// with the user's own user data; it never is an argument.
func TestVMCreatePassword(t *testing.T) {
	f := newFake(t)
	dir := t.TempDir()
	pwFile, ud := filepath.Join(dir, "pw"), filepath.Join(dir, "ud")
	os.WriteFile(pwFile, []byte("s3cret-pw\n"), 0o600)
	os.WriteFile(ud, []byte("#!/bin/sh\necho hi\n"), 0o600)
	res := f.cli(t, "vm", "create", "deb1", "--password-file", pwFile, "--user-data", ud)
	if res.code != 0 {
		t.Fatalf("code %d: %s", res.code, res.stderr)
	}
	body := f.lastWrite(t).Body
	if strings.Contains(body, "s3cret-pw") {
		t.Fatal("the password itself was sent")
	}
	var req api.VMCreateRequest
	if e := decodeStrict([]byte(body), &req); e != nil || req.Spec.CloudInit == nil {
		t.Fatalf("request %s: %v", body, e)
	}
	u := req.Spec.CloudInit.UserData
	for _, want := range []string{"multipart/mixed", "text/cloud-config", "password: $6$", "expire: false", "text/x-shellscript", "echo hi"} {
		if !strings.Contains(u, want) {
			t.Errorf("user data lacks %q:\n%s", want, u)
		}
	}
	if res := f.cli(t, "vm", "create", "x", "--password-file", pwFile, "--password-prompt"); res.code != 2 {
		t.Errorf("both password flags: code %d, stderr %q", res.code, res.stderr)
	}
}
