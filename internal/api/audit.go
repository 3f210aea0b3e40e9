package api

import (
	"encoding/json"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// AuditList is the body of GET /audit: records newest first. A tenant
// sees its project's records only.
type AuditList struct {
	Items []model.AuditRecord `json:"items"`
	// Head is the newest record's sequence number.
	Head int64 `json:"head"`
}

// MaxAuditList bounds ?limit= of GET /audit.
const MaxAuditList = 1000

// AuditRecords is the body of GET /audit/records: the stored bytes of a
// run of records, in chain order, for export and verification.
type AuditRecords struct {
	Records []json.RawMessage `json:"records"`
	// Next is the sequence number to ask for next (0: the run reached
	// the head).
	Next int64 `json:"next,omitempty"`
}

// MaxAuditRecords bounds one GET /audit/records answer.
const MaxAuditRecords = 5000

// AuditHeadView is the body of GET /audit/head: what a verifier needs
// besides the records.
type AuditHeadView struct {
	Head model.AuditHead `json:"head"`
	// Anchor is the last record pruned from the store (signed), nil
	// when nothing was pruned.
	Anchor *model.AuditSignature `json:"anchor,omitempty"`
	Key    model.AuditKey        `json:"key"`
	// Exported is the last record the servers wrote to their export
	// files.
	Exported int64 `json:"exported"`
	// MaxHeadAge is how old the servers let the head get while they
	// run (seconds): a verifier allows this much.
	MaxHeadAge int `json:"maxHeadAgeSeconds"`
}

// ComplianceReport is the body of GET /compliance: every VM, its
// locality constraint, the hosts it ran on (from the audit trail) and any
// breach. Since and Records say how far back the trail in the store
// reaches (older history: the export files).
type ComplianceReport struct {
	VMs      []model.ComplianceVM `json:"vms"`
	Breaches int                  `json:"breaches"`
	// FirstRecord is the oldest record the report read (its time: Since).
	FirstRecord int64     `json:"firstRecord"`
	Since       time.Time `json:"since,omitempty"`
}
