package qemu

import (
	"regexp"
	"strings"
	"unicode/utf8"
)

// What the driver's operations return travels far: the agent reports it
// as the VM's last error, which the tenant reads through the API. So it
// must not carry the host's insides — QEMU's command line or log, host
// paths — nor be long. Operations pass their error through public: the
// text is shortened and stripped of paths, the full text goes to the
// driver's log, and errors.Is / errors.As still see every cause.

// maxErrorLen bounds the text of a returned error (bytes, before "…").
const maxErrorLen = 300

// hostError is an error whose text was cut for leaving the host; the
// original stays reachable for errors.Is.
type hostError struct {
	msg string
	err error
}

func (e *hostError) Error() string { return e.msg }
func (e *hostError) Unwrap() error { return e.err }

// pathRe matches an absolute path: a '/' that starts a word, up to a
// space, quote, comma, semicolon or closing bracket.
var pathRe = regexp.MustCompile(`(^|[\s'"(=\[])/[^\s'",;)\]]*`)

// redact returns msg without paths or line breaks, at most maxErrorLen
// bytes (cut on a rune boundary).
func redact(msg string) string {
	msg = pathRe.ReplaceAllStringFunc(msg, func(m string) string {
		lead, tail := "", ""
		if !strings.HasPrefix(m, "/") {
			lead = m[:1]
		}
		if strings.HasSuffix(m, ":") { // "open /x: permission denied"
			tail = ":"
		}
		return lead + "<path>" + tail
	})
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > maxErrorLen {
		cut := maxErrorLen
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

// public makes *errp fit to leave the host (see above); op and id name
// the operation in the log line that keeps the full text. Use it as
// `defer d.public(&err, "start", id)` in every exported operation.
func (d *Driver) public(errp *error, op, id string) {
	err := *errp
	if err == nil {
		return
	}
	if _, ok := err.(*hostError); ok {
		return // already public
	}
	full := err.Error()
	msg := redact(full)
	if msg == full {
		return
	}
	d.log.Warn("qemu: "+op+" failed", "vm", id, "err", full)
	*errp = &hostError{msg: msg, err: err}
}
