package model

import (
	"fmt"
	"strings"
)

// Token scopes narrow what a token's role allows (docs/audit.md): a
// token with scopes may call only the routes one of them allows, and a
// group scope confines its VM routes to the VMs of one group.
const (
	// ScopeRead: reads only (GET), everywhere the role reads; no console.
	ScopeRead = "read"
	// ScopeVMsRead: reads of VMs and their snapshots only.
	ScopeVMsRead = "vms:read"
	// ScopeVMsPower: reads of VMs and start, stop, restart.
	ScopeVMsPower = "vms:power"
	// ScopeVMsWrite: every VM route (create, change, delete, snapshots,
	// disks, NICs, console).
	ScopeVMsWrite = "vms:write"
	// ScopeGroupPrefix + NAME confines VM routes to VMs whose label
	// GroupLabel is NAME (the members of scaling group NAME carry it
	// too); such a token creates no VMs and changes no labels.
	ScopeGroupPrefix = "group:"
	// MaxScopes bounds a token's scopes.
	MaxScopes = 8
)

// ValidScopes checks a token's scopes: known names, at most one group
// (a DNS label), and a group only beside another scope.
func ValidScopes(scopes []string) error {
	if len(scopes) > MaxScopes {
		return fieldErr("scopes", "at most %d scopes (got %d)", MaxScopes, len(scopes))
	}
	groups, others := 0, 0
	for i, s := range scopes {
		field := fmt.Sprintf("scopes[%d]", i)
		switch {
		case s == ScopeRead || s == ScopeVMsRead || s == ScopeVMsPower || s == ScopeVMsWrite:
			others++
		case strings.HasPrefix(s, ScopeGroupPrefix):
			if err := ValidName(field, strings.TrimPrefix(s, ScopeGroupPrefix)); err != nil {
				return err
			}
			groups++
		default:
			return fieldErr(field, "%q is not a scope: use read, vms:read, vms:power, vms:write or group:NAME", cutValue(s))
		}
	}
	switch {
	case groups > 1:
		return fieldErr("scopes", "at most one group scope")
	case groups == 1 && others == 0:
		return fieldErr("scopes", "a group scope narrows another scope: add vms:read, vms:power or vms:write")
	}
	return nil
}

// ScopeGroup returns the group a token's scopes confine it to ("" none).
func ScopeGroup(scopes []string) string {
	for _, s := range scopes {
		if g, ok := strings.CutPrefix(s, ScopeGroupPrefix); ok {
			return g
		}
	}
	return ""
}

func cutValue(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
