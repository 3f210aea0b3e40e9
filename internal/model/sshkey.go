package model

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// sshKeyFields lists, per accepted public key type, the wire fields that
// follow the type name in the key blob (RFC 4253, RFC 5656, RFC 8709 and
// OpenSSH's PROTOCOL.u2f): "s" a string, "m" an mpint (the same framing).
var sshKeyFields = map[string]string{
	"ssh-ed25519":                        "s",
	"ssh-rsa":                            "mm",
	"ecdsa-sha2-nistp256":                "ss",
	"ecdsa-sha2-nistp384":                "ss",
	"ecdsa-sha2-nistp521":                "ss",
	"sk-ssh-ed25519@openssh.com":         "ss",
	"sk-ecdsa-sha2-nistp256@openssh.com": "sss",
}

// CheckSSHPublicKey checks that line is one OpenSSH public key line,
// "TYPE BASE64 [COMMENT]", of an accepted type whose blob is well formed
// and names the same type. authorized_keys options (command="...") are
// refused: put them in user-data. It uses the standard library only; the
// server parses accepted keys once more with golang.org/x/crypto/ssh.
func CheckSSHPublicKey(line string) error {
	if len(line) > MaxSSHKeyLen {
		return fmt.Errorf("is %d bytes, more than the maximum of %d", len(line), MaxSSHKeyLen)
	}
	for _, r := range line {
		if r < 0x20 || r == 0x7f {
			return errors.New("holds a control character: give one key per entry, on one line")
		}
	}
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return errors.New("is not a public key line (\"ssh-ed25519 AAAA... comment\")")
	}
	typ := fields[0]
	want, ok := sshKeyFields[typ]
	if !ok {
		return fmt.Errorf("key type %s is not accepted: use ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521 or an sk- key (no authorized_keys options)", quoteShort(typ))
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return errors.New("the key data is not base64")
	}
	got, rest, ok := sshString(blob)
	if !ok || string(got) != typ {
		return fmt.Errorf("the key data is not a %s key", typ)
	}
	for range want {
		var f []byte
		if f, rest, ok = sshString(rest); !ok || len(f) == 0 {
			return fmt.Errorf("the %s key data is truncated", typ)
		}
	}
	if len(rest) != 0 {
		return fmt.Errorf("the %s key data has %d bytes too many", typ, len(rest))
	}
	return nil
}

// sshString reads one length-prefixed string of the SSH wire format.
func sshString(b []byte) (s, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-4) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}
