package model

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
)

// Admission limits. Every value a user sends is bounded here, so that a
// request can neither exhaust the control plane nor carry text that a
// host later renders somewhere it means more (a QEMU option string, a
// file path). The figures follow peers: Kubernetes for labels (a name of
// at most 63 characters under an optional DNS-subdomain prefix of at most
// 253, values of at most 63), OpenStack and Incus for device counts.
// docs/api-validation.md lists them all.
const (
	MaxDisks     = 32 // disks per VM
	MaxNICs      = 16 // NICs per VM
	MaxLabels    = 64 // entries per label map (labels, required, preferred)
	MaxSSHKeys   = 32 // cloud-init public keys per VM
	MaxSSHKeyLen = 16 << 10
	// MaxHostnameLen is the longest cloud-init host name (RFC 1035).
	MaxHostnameLen = 253
	// MaxMaxPerHost bounds placement.maxPerHost.
	MaxMaxPerHost = 10000
	// MaxDiskIOPS and MaxDiskBps bound the disk throttles (QEMU's own
	// ceiling is 1e15).
	MaxDiskIOPS       = 10_000_000
	MaxDiskBps  int64 = 1 << 40 // 1 TiB/s
	// MaxCPUShares is the cgroup v1 ceiling of cpu.shares.
	MaxCPUShares = 262144
	// MaxDescription bounds free-text descriptions (projects).
	MaxDescription = 1024
	// MaxQuotaCount and MaxQuotaSize bound project quotas.
	MaxQuotaCount       = 1 << 30
	MaxQuotaSize  Bytes = 1 << 60 // 1 EiB
	// MaxWeights bounds the entries of Policy.Weights.
	MaxWeights = 32
	// MaxWeight bounds a score weight.
	MaxWeight = 100
)

var (
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	// labelName is the name part of a label key and the shape of a
	// non-empty label value (Kubernetes' qualified name).
	labelName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	// dnsSubdomain is a label key's optional prefix (RFC 1123).
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	macAddr      = regexp.MustCompile(`^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$`)
)

// ValidName checks that s is a DNS label (RFC 1123): lowercase letters,
// digits and '-', 1–63 characters, starting and ending alphanumeric.
func ValidName(field, s string) error {
	if s == "" {
		return fieldErr(field, "is required")
	}
	if !dnsLabel.MatchString(s) {
		return fieldErr(field, "%s is not a DNS label: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit", quoteShort(s))
	}
	return nil
}

// validOptionalName is ValidName for a field that may be empty.
func validOptionalName(field, s string) error {
	if s == "" {
		return nil
	}
	return ValidName(field, s)
}

// ValidLabelKey checks a label key: NAME or PREFIX/NAME, NAME being 1-63
// letters, digits, '-', '_' and '.' (alphanumeric at both ends) and
// PREFIX a DNS subdomain of at most 253 characters.
func ValidLabelKey(k string) bool {
	prefix, name, found := strings.Cut(k, "/")
	if !found {
		name, prefix = prefix, ""
	} else if prefix == "" || len(prefix) > 253 || !dnsSubdomain.MatchString(prefix) {
		return false
	}
	return labelName.MatchString(name)
}

// ValidLabelValue checks a label value: empty, or 1-63 letters, digits,
// '-', '_' and '.', alphanumeric at both ends.
func ValidLabelValue(v string) bool { return v == "" || labelName.MatchString(v) }

func validLabels(field string, m map[string]string) error {
	if len(m) > MaxLabels {
		return fieldErr(field, "has %d labels, more than the maximum of %d", len(m), MaxLabels)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !ValidLabelKey(k) {
			return fieldErr(field, "label key %s is invalid: use NAME or PREFIX/NAME, NAME 1-63 letters, digits, '-', '_', '.' (alphanumeric at both ends), PREFIX a DNS subdomain", quoteShort(k))
		}
		if !ValidLabelValue(m[k]) {
			return fieldErr(field, "label %q has invalid value %s: use up to 63 letters, digits, '-', '_', '.' (alphanumeric at both ends)", k, quoteShort(m[k]))
		}
	}
	return nil
}

// ValidMAC checks a MAC address for a virtual NIC: six two-digit hex
// octets separated by ':', unicast (the lowest bit of the first octet
// clear) and not all zero.
func ValidMAC(field, s string) error {
	if !macAddr.MatchString(s) {
		return fieldErr(field, "%s is not a MAC address: write six hex octets separated by ':', e.g. 52:54:00:12:34:56", quoteShort(s))
	}
	var first byte
	fmt.Sscanf(s[:2], "%02x", &first)
	if first&1 == 1 {
		return fieldErr(field, "%s is a multicast address: the first octet must be even (e.g. 52:54:00:...)", s)
	}
	if strings.Trim(s, "0:") == "" {
		return fieldErr(field, "00:00:00:00:00:00 is not a usable address")
	}
	return nil
}

// finite reports whether f is neither NaN nor infinite.
func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// quoteShort quotes s for an error message, cut to 80 bytes so that a
// 10,000-character value does not come back 10,000 characters long.
func quoteShort(s string) string {
	const limit = 80
	if len(s) <= limit {
		return fmt.Sprintf("%q", s)
	}
	cut := limit
	for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:cut], len(s))
}
