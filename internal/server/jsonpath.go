package server

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
)

// encoding/json names an unknown field by its key alone ("z" for
// {"spec":{"z":1}}) and a mistyped one without array indices or map keys
// ("spec.disks.size"). jsonPath walks the body again beside the Go type
// it was decoded into and returns the full path of the value at fault:
// "spec.z", "spec.disks[1].size", "weights.binpack".

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// pathFinder walks one JSON document beside a Go type.
type pathFinder struct {
	dec *json.Decoder
	// off, when > 0, stops the walk at the value whose first token ends
	// at this input offset (a type error's offset).
	off int64
	// unknown stops the walk at the first object key that names no field
	// of the struct it is decoded into.
	unknown bool
}

// unknownFieldPath returns the path of the first key of body that t does
// not have, or "" when there is none (or the body is not JSON).
func unknownFieldPath(body []byte, t reflect.Type) string {
	f := &pathFinder{dec: json.NewDecoder(bytes.NewReader(body)), unknown: true}
	p, found := f.value(t, "")
	if !found {
		return ""
	}
	return p
}

// pathAtOffset returns the path of the value of body whose first token
// ends at off, or "".
func pathAtOffset(body []byte, t reflect.Type, off int64) string {
	f := &pathFinder{dec: json.NewDecoder(bytes.NewReader(body)), off: off}
	p, found := f.value(t, "")
	if !found {
		return ""
	}
	return p
}

// value consumes one value decoded into t at path. It reports the path
// and true when the walk stops there (or below).
func (f *pathFinder) value(t reflect.Type, path string) (string, bool) {
	tok, err := f.dec.Token()
	if err != nil {
		return "", false
	}
	if f.off > 0 && f.dec.InputOffset() == f.off {
		return path, true
	}
	d, composite := tok.(json.Delim)
	if !composite {
		return "", false
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	opaque := t == nil || t.Kind() == reflect.Interface || reflect.PointerTo(t).Implements(unmarshalerType)
	switch {
	case d == '{' && !opaque && t.Kind() == reflect.Struct:
		return f.object(path, func(key string) (reflect.Type, bool) { return structField(t, key) })
	case d == '{' && !opaque && t.Kind() == reflect.Map:
		return f.object(path, func(string) (reflect.Type, bool) { return t.Elem(), true })
	case d == '[' && !opaque && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for i := 0; f.dec.More(); i++ {
			if p, found := f.value(t.Elem(), path+"["+strconv.Itoa(i)+"]"); found {
				return p, true
			}
		}
		_, _ = f.dec.Token() // ']'
		return "", false
	}
	// A composite where t wants something else (or anything): walk it
	// without a type, still watching the offset.
	if d == '{' {
		return f.object(path, func(string) (reflect.Type, bool) { return nil, true })
	}
	for i := 0; f.dec.More(); i++ {
		if p, found := f.value(nil, path+"["+strconv.Itoa(i)+"]"); found {
			return p, true
		}
	}
	_, _ = f.dec.Token()
	return "", false
}

// object walks the members of an object whose '{' was read; field gives
// the type of a key's value, or false for an unknown key.
func (f *pathFinder) object(path string, field func(string) (reflect.Type, bool)) (string, bool) {
	for f.dec.More() {
		tok, err := f.dec.Token()
		if err != nil {
			return "", false
		}
		key, _ := tok.(string)
		p := key
		if path != "" {
			p = path + "." + key
		}
		ft, known := field(key)
		if !known && f.unknown {
			return p, true
		}
		if found := f.valueAt(ft, p); found != "" {
			return found, true
		}
	}
	_, _ = f.dec.Token() // '}'
	return "", false
}

func (f *pathFinder) valueAt(t reflect.Type, path string) string {
	if p, found := f.value(t, path); found {
		return p
	}
	return ""
}

// structField finds the field of struct t that encoding/json would
// decode key into: an exact name first, else a case-insensitive one,
// looking into embedded structs.
func structField(t reflect.Type, key string) (reflect.Type, bool) {
	var fold reflect.Type
	var walk func(t reflect.Type) (reflect.Type, bool)
	walk = func(t reflect.Type) (reflect.Type, bool) {
		for i := range t.NumField() {
			sf := t.Field(i)
			name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
			if name == "-" && !strings.HasPrefix(sf.Tag.Get("json"), "-,") {
				continue
			}
			ft := sf.Type
			if sf.Anonymous && name == "" {
				for ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					if got, ok := walk(ft); ok {
						return got, true
					}
					continue
				}
			}
			if !sf.IsExported() {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			if name == key {
				return sf.Type, true
			}
			if fold == nil && strings.EqualFold(name, key) {
				fold = sf.Type
			}
		}
		return nil, false
	}
	if got, ok := walk(t); ok {
		return got, true
	}
	return fold, fold != nil
}
