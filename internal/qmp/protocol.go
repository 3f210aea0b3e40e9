package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Sentinel errors.
var (
	// ErrClosed is returned for commands on a closed connection and for
	// commands whose reply never came because the connection closed.
	ErrClosed = errors.New("qmp: connection closed")
	// ErrProtocol is returned when the peer sends something that is not QMP.
	ErrProtocol = errors.New("qmp: protocol error")
)

// Error is an error reply from QEMU: {"error": {"class": ..., "desc": ...}}.
type Error struct {
	Command string // the command that failed
	Class   string // e.g. GenericError, CommandNotFound, DeviceNotFound
	Desc    string // QEMU's human-readable description
}

func (e *Error) Error() string {
	return fmt.Sprintf("qmp: %s: %s (%s)", e.Command, e.Desc, e.Class)
}

// IsClass reports whether err is (or wraps) a QMP error of the given class.
func IsClass(err error, class string) bool {
	var qe *Error
	return errors.As(err, &qe) && qe.Class == class
}

// Version is QEMU's version from the greeting.
type Version struct {
	Major, Minor, Micro int
	Package             string
}

func (v Version) String() string {
	return strconv.Itoa(v.Major) + "." + strconv.Itoa(v.Minor) + "." + strconv.Itoa(v.Micro)
}

// Event is an asynchronous QMP event.
type Event struct {
	Name      string
	Data      json.RawMessage
	Timestamp time.Time
}

// DecodeData decodes the event's data into v.
func (e Event) DecodeData(v any) error {
	if len(e.Data) == 0 {
		return nil
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("qmp: event %s: %w", e.Name, err)
	}
	return nil
}

// kind is what a decoded message is.
type kind int

const (
	kindGreeting kind = iota + 1
	kindReturn
	kindError
	kindEvent
)

// message is one decoded QMP message from the server.
type message struct {
	kind    kind
	id      uint64 // for replies carrying one of our numeric ids
	hasID   bool
	ret     json.RawMessage // kindReturn
	err     *Error          // kindError (Command is filled by the caller)
	event   Event           // kindEvent
	version Version         // kindGreeting
	oob     bool            // kindGreeting: the server offers out-of-band execution
}

type wireMessage struct {
	QMP *struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
		Capabilities []string `json:"capabilities"`
	} `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
	ID json.RawMessage `json:"id"`
}

// decodeMessage decodes one QMP message. It never panics on any input
// (fuzzed) and returns an error wrapping ErrProtocol for anything that is
// not a well-formed server message.
func decodeMessage(b []byte) (message, error) {
	var w wireMessage
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&w); err != nil {
		return message{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	var m message
	if len(w.ID) > 0 {
		if id, err := strconv.ParseUint(string(w.ID), 10, 64); err == nil {
			m.id, m.hasID = id, true
		}
	}
	n := 0
	if w.QMP != nil {
		n++
		m.kind = kindGreeting
		v := w.QMP.Version
		m.version = Version{Major: v.QEMU.Major, Minor: v.QEMU.Minor, Micro: v.QEMU.Micro, Package: v.Package}
		m.oob = slices.Contains(w.QMP.Capabilities, "oob")
	}
	if w.Return != nil {
		n++
		m.kind = kindReturn
		m.ret = w.Return
	}
	if w.Error != nil {
		n++
		m.kind = kindError
		m.err = &Error{Class: w.Error.Class, Desc: w.Error.Desc}
		if m.err.Class == "" {
			m.err.Class = "GenericError"
		}
	}
	if w.Event != "" {
		n++
		m.kind = kindEvent
		m.event = Event{Name: w.Event, Data: w.Data}
		if ts := w.Timestamp; ts != nil && ts.Seconds >= 0 && ts.Microseconds >= 0 && ts.Microseconds < 1e6 {
			m.event.Timestamp = time.Unix(ts.Seconds, ts.Microseconds*1000).UTC()
		}
	}
	switch n {
	case 0:
		return message{}, fmt.Errorf("%w: message is neither greeting, reply nor event: %.200s", ErrProtocol, b)
	case 1:
		return m, nil
	default:
		return message{}, fmt.Errorf("%w: ambiguous message: %.200s", ErrProtocol, b)
	}
}

// request is one command on the wire.
type request struct {
	Execute   string `json:"execute,omitempty"`
	ExecOOB   string `json:"exec-oob,omitempty"` // out of band (Options.OOB)
	Arguments any    `json:"arguments,omitempty"`
	ID        uint64 `json:"id"`
}
