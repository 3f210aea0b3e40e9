package cli

import (
	"bufio"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// cryptAlphabet is crypt(3)'s base-64 alphabet.
const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// sha512Crypt returns the SHA-512 crypt hash ("$6$salt$...", 5000
// rounds) of password, as glibc's crypt(3) and mkpasswd -m sha-512 make
// it (Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512").
func sha512Crypt(password, salt string) string {
	if len(salt) > 16 {
		salt = salt[:16]
	}
	p, s := []byte(password), []byte(salt)
	b := sha512.New()
	b.Write(p)
	b.Write(s)
	b.Write(p)
	sumB := b.Sum(nil)
	a := sha512.New()
	a.Write(p)
	a.Write(s)
	for n := len(p); n > 0; n -= 64 {
		a.Write(sumB[:min(n, 64)])
	}
	for n := len(p); n > 0; n >>= 1 {
		if n&1 != 0 {
			a.Write(sumB)
		} else {
			a.Write(p)
		}
	}
	sumA := a.Sum(nil)
	dp := sha512.New()
	for range p {
		dp.Write(p)
	}
	pBytes := repeatTo(dp.Sum(nil), len(p))
	ds := sha512.New()
	for i := 0; i < 16+int(sumA[0]); i++ {
		ds.Write(s)
	}
	sBytes := repeatTo(ds.Sum(nil), len(s))
	c := sumA
	for i := 0; i < 5000; i++ {
		h := sha512.New()
		if i&1 != 0 {
			h.Write(pBytes)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(sBytes)
		}
		if i%7 != 0 {
			h.Write(pBytes)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(pBytes)
		}
		c = h.Sum(nil)
	}
	return "$6$" + salt + "$" + cryptB64(c)
}

func repeatTo(seq []byte, n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n {
		out = append(out, seq[:min(len(seq), n-len(out))]...)
	}
	return out
}

// cryptB64 encodes the 64 bytes of a SHA-512 crypt digest in crypt's
// byte order.
func cryptB64(c []byte) string {
	var sb strings.Builder
	enc := func(b2, b1, b0 byte, n int) {
		w := uint(b2)<<16 | uint(b1)<<8 | uint(b0)
		for ; n > 0; n-- {
			sb.WriteByte(cryptAlphabet[w&0x3f])
			w >>= 6
		}
	}
	order := [][3]int{{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4}, {47, 5, 26}, {6, 27, 48},
		{28, 49, 7}, {50, 8, 29}, {9, 30, 51}, {31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13}, {56, 14, 35},
		{15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19}, {62, 20, 41}}
	for _, o := range order {
		enc(c[o[0]], c[o[1]], c[o[2]], 4)
	}
	enc(0, 0, c[63], 2)
	return sb.String()
}

// newSalt returns 16 random characters of crypt's alphabet.
func newSalt() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = cryptAlphabet[int(b[i])%len(cryptAlphabet)]
	}
	return string(b[:])
}

// readPassword returns the password of --password-file (its first line)
// or, with --password-prompt, asks for it twice on the terminal (stdin);
// "" when neither flag was given. A password never comes from argv.
func readPassword(cmd *cobra.Command, file string, prompt bool) (string, error) {
	switch {
	case file != "" && prompt:
		return "", usagef("give --password-file or --password-prompt, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usagef("--password-file: %v", err)
		}
		pw, _, _ := strings.Cut(string(b), "\n")
		pw = strings.TrimRight(pw, "\r")
		if pw == "" {
			return "", usagef("--password-file: %s starts with an empty line", file)
		}
		return pw, nil
	case prompt:
		return promptPassword(cmd)
	}
	return "", nil
}

// promptPassword reads the password twice from stdin, with echo off when
// stdin is a terminal (stty), and checks that both agree.
func promptPassword(cmd *cobra.Command) (string, error) {
	in := cmd.InOrStdin()
	restore := noEcho(in)
	defer restore()
	r := bufio.NewReader(in)
	ask := func(q string) (string, error) {
		fmt.Fprint(errw(cmd), q)
		line, err := r.ReadString('\n')
		fmt.Fprintln(errw(cmd))
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", fmt.Errorf("--password-prompt: no password read: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	pw, err := ask("Password for the image's default user: ")
	if err != nil {
		return "", err
	}
	again, err := ask("Again: ")
	if err != nil {
		return "", err
	}
	if pw == "" || pw != again {
		return "", usagef("--password-prompt: the two passwords are empty or differ")
	}
	return pw, nil
}

// passwordCloudConfig is the cloud-config that sets the default user's
// password to hash, keeps it from expiring and allows password logins
// over SSH.
func passwordCloudConfig(hash string) string {
	return "#cloud-config\npassword: " + hash + "\nchpasswd:\n  expire: false\nssh_pwauth: true\n"
}

// mimeBoundary separates the parts of combined user data.
const mimeBoundary = "==vpool-user-data=="

// combineUserData joins the password's cloud-config with the user's own
// user data into a MIME multipart document (cloud-init merges the parts).
func combineUserData(pwConfig, user string) (string, error) {
	if user == "" {
		return pwConfig, nil
	}
	if strings.HasPrefix(user, "Content-Type:") || strings.Contains(user, mimeBoundary) {
		return "", usagef("--user-data is already MIME multipart: add the password to it yourself instead of --password-*")
	}
	ctype := "text/plain"
	switch {
	case strings.HasPrefix(user, "#cloud-config"):
		ctype = "text/cloud-config"
	case strings.HasPrefix(user, "#!"):
		ctype = "text/x-shellscript"
	case strings.HasPrefix(user, "#include"):
		ctype = "text/x-include-url"
	}
	var sb strings.Builder
	sb.WriteString("Content-Type: multipart/mixed; boundary=\"" + mimeBoundary + "\"\nMIME-Version: 1.0\n\n")
	for _, part := range []struct{ ctype, body string }{{"text/cloud-config", pwConfig}, {ctype, user}} {
		sb.WriteString("--" + mimeBoundary + "\nContent-Type: " + part.ctype + "; charset=\"utf-8\"\nMIME-Version: 1.0\n\n")
		sb.WriteString(part.body)
		if !strings.HasSuffix(part.body, "\n") {
			sb.WriteString("\n")
		}
	}
	sb.WriteString("--" + mimeBoundary + "--\n")
	return sb.String(), nil
}
