package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// httpError is an API error with its HTTP status.
type httpError struct {
	status int
	body   api.Error
}

func (e *httpError) Error() string { return e.body.Error() }

func errf(status int, code, field, format string, args ...any) *httpError {
	return &httpError{status: status, body: api.Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}}
}

func badRequest(format string, args ...any) *httpError {
	return errf(http.StatusBadRequest, api.CodeBadRequest, "", format, args...)
}

func notFound(format string, args ...any) *httpError {
	return errf(http.StatusNotFound, api.CodeNotFound, "", format, args...)
}

func forbidden(format string, args ...any) *httpError {
	return errf(http.StatusForbidden, api.CodeForbidden, "", format, args...)
}

func conflict(format string, args ...any) *httpError {
	return errf(http.StatusConflict, api.CodeConflict, "", format, args...)
}

func fieldError(field, format string, args ...any) *httpError {
	return errf(http.StatusBadRequest, api.CodeInvalidField, field, format, args...)
}

// toHTTP maps an error from the layers below to an API error. Unknown
// errors become 500 internal (and are logged by the caller).
func toHTTP(err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	var fe *model.FieldError
	switch {
	case errors.Is(err, state.ErrQuotaExceeded):
		field := ""
		msg := err.Error()
		if errors.As(err, &fe) {
			field, msg = fe.Field, fe.Message
		}
		return errf(http.StatusForbidden, api.CodeQuotaExceeded, field, "%s", msg)
	case errors.Is(err, state.ErrReserve) && errors.As(err, &fe):
		return errf(http.StatusConflict, api.CodeConflict, fe.Field, "%s", fe.Message)
	case errors.As(err, &fe):
		return fieldError(fe.Field, "%s", fe.Message)
	case errors.Is(err, store.ErrNotFound):
		return notFound("%s", strings.TrimPrefix(err.Error(), "state: "))
	case errors.Is(err, state.ErrExists):
		return conflict("%s", strings.TrimPrefix(err.Error(), "state: "))
	case errors.Is(err, state.ErrNotEmpty):
		return conflict("%s", strings.TrimPrefix(err.Error(), "state: "))
	case errors.Is(err, state.ErrContention), errors.Is(err, store.ErrClosed):
		return errf(http.StatusServiceUnavailable, api.CodeUnavailable, "", "%s; retry", err.Error())
	case errors.Is(err, store.ErrUnavailable):
		return errf(http.StatusServiceUnavailable, api.CodeUnavailable, "", "the store did not answer (%v): a change may or may not have been made; read it back before retrying", err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return errf(http.StatusServiceUnavailable, api.CodeUnavailable, "", "request did not complete: %v", err)
	}
	return errf(http.StatusInternalServerError, api.CodeInternal, "", "internal error: %v", err)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// decodeJSON reads exactly one JSON object of v's type from the request
// body: no unknown fields, nothing after it, at most MaxBody bytes, not
// empty and not null. The error names the field at fault by its full
// JSON path.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) *httpError {
	body, he := readBody(w, r)
	if he != nil {
		return he
	}
	return decodeBytes(body, v)
}

// decodeOptionalJSON is decodeJSON for a route whose body may be left
// out: an empty body leaves v as it is; a null one is still refused.
func decodeOptionalJSON(w http.ResponseWriter, r *http.Request, v any) *httpError {
	body, he := readBody(w, r)
	if he != nil || len(bytes.TrimSpace(body)) == 0 {
		return he
	}
	return decodeBytes(body, v)
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *httpError) {
	body, err := readAllSized(http.MaxBytesReader(w, r.Body, MaxBody), r.ContentLength)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errf(http.StatusRequestEntityTooLarge, api.CodeBadRequest, "body", "request body is larger than %d bytes", MaxBody)
		}
		return nil, badRequest("reading request body: %v", err)
	}
	noteBody(r, body)
	return body, nil
}

// presizeMax is the largest declared length readAllSized allocates up
// front (heartbeats and most API bodies are far smaller).
const presizeMax = 64 << 10

// readAllSized is io.ReadAll into one buffer of the length the request
// declares (when it declares one up to presizeMax), not one for each growth
// from 512 bytes: every heartbeat's body is read (1,000 a second at
// 10,000 hosts).
func readAllSized(rd io.Reader, n int64) ([]byte, error) {
	// Trust the declared length only up to presizeMax: a caller that
	// declares a megabyte and sends a trickle must not make every such
	// request hold a megabyte before its bytes arrive.
	if n <= 0 || n > presizeMax {
		return io.ReadAll(rd)
	}
	b := make([]byte, 0, n+1) // +1: room for the read that meets the end
	for {
		m, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) { // longer than declared: let the reader say what is wrong
			b = append(b, 0)[:len(b)]
		}
	}
}

// bodyError is a refusal of the body as a whole.
func bodyError(format string, args ...any) *httpError {
	return errf(http.StatusBadRequest, api.CodeBadRequest, "body", format, args...)
}

// decodeBytes is decodeJSON's pure core (the fuzz targets call it).
func decodeBytes(body []byte, v any) *httpError {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return bodyError("request body is empty: send a JSON object")
	}
	if bytes.Equal(trimmed, []byte("null")) {
		// json.Decode leaves v untouched for null: a PUT would store
		// the zero value and a POST would act on defaults.
		return bodyError("request body is null: send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, body, reflect.TypeOf(v))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return bodyError("request body holds more than one JSON value")
	}
	return nil
}

func decodeError(err error, body []byte, t reflect.Type) *httpError {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return bodyError("malformed JSON at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return bodyError("the body must be a JSON object, not %s", article(te.Value))
		}
		if p := pathAtOffset(body, t, te.Offset); p != "" {
			field = p
		}
		return fieldError(field, "%s", typeHint(te, stringBefore(body, te.Offset)))
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return bodyError("malformed JSON: the body ends too early")
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, `json: unknown field "`); ok {
		name = strings.TrimSuffix(name, `"`)
		if p := unknownFieldPath(body, t); p != "" {
			name = p
		}
		if len(name) > 256 {
			name = name[:256] + "…"
		}
		return fieldError(name, "unknown field %s: check its spelling against /api/v1/openapi.json", quoteField(name))
	}
	return bodyError("malformed JSON: %s", strings.TrimPrefix(msg, "json: "))
}

// quoteField quotes a field path for a message, cut to 80 bytes.
func quoteField(s string) string {
	if len(s) > 80 {
		return strconv.Quote(s[:80]) + "…"
	}
	return strconv.Quote(s)
}

func article(s string) string {
	if s != "" && strings.ContainsRune("aeiou", rune(s[0])) {
		return "an " + s
	}
	return "a " + s
}

// stringBefore returns the JSON string literal that ends at offset in
// body (the value a type error is about), or "".
func stringBefore(body []byte, offset int64) string {
	if offset <= 0 || offset > int64(len(body)) {
		return ""
	}
	b := bytes.TrimRight(body[:offset], " \t\r\n")
	if len(b) < 2 || b[len(b)-1] != '"' {
		return ""
	}
	for i := len(b) - 2; i >= 0; i-- {
		if b[i] == '"' && (i == 0 || b[i-1] != '\\') {
			var s string
			if json.Unmarshal(b[i:], &s) == nil {
				return s
			}
			return ""
		}
	}
	return ""
}

// typeHint explains a JSON type mismatch in the terms of the API; str is
// the offending string value when it was a string.
func typeHint(te *json.UnmarshalTypeError, str string) string {
	got := te.Value
	if len(str) > 80 {
		str = str[:80] + "…"
	}
	if te.Value == "string" {
		got = fmt.Sprintf("the string %q", str)
	}
	switch te.Type.String() {
	case "model.Bytes":
		if te.Value == "string" {
			if n, err := model.ParseBytes(str); err == nil {
				return fmt.Sprintf("sizes are whole numbers of bytes in JSON: write %d for %q (the CLI accepts units)", int64(n), str)
			}
			return fmt.Sprintf("%q is not a size; in JSON a size is a whole number of bytes, e.g. 2147483648 for 2GiB", str)
		}
		return fmt.Sprintf("must be a whole number of bytes, e.g. 2147483648 for 2GiB (got %s)", got)
	case "int", "int64":
		if strings.HasPrefix(got, "number") {
			return fmt.Sprintf("must be a whole number in range (got %s)", got)
		}
		return fmt.Sprintf("must be a whole number (got %s)", got)
	case "bool":
		return fmt.Sprintf("must be true or false (got %s)", got)
	case "string", "model.Phase", "model.PowerState", "model.Role", "model.HostState":
		return fmt.Sprintf("must be a string (got %s)", got)
	}
	return fmt.Sprintf("has the wrong type: want %s, got %s", te.Type, got)
}
