package metrics

import "github.com/prometheus/client_golang/prometheus"

// AuditStats are the audit appender's counters (internal/auditlog).
type AuditStats struct {
	Written, Batches, Conflicts, Dropped int64
	Queued                               int
}

// SetAudit exports the audit appender's counters, read by fn at scrape
// time: records written, batches, lost races on the chain's head,
// records dropped (the store did not take them), records queued.
func (m *Metrics) SetAudit(fn func() AuditStats) {
	m.Registry.MustRegister(auditCollector{fn: fn,
		written:   prometheus.NewDesc("vpool_audit_records_written_total", "Audit records this server appended to the chain.", nil, nil),
		batches:   prometheus.NewDesc("vpool_audit_batches_total", "Transactions that appended audit records.", nil, nil),
		conflicts: prometheus.NewDesc("vpool_audit_head_conflicts_total", "Appends that lost the race for the chain's head to another server and linked again.", nil, nil),
		dropped:   prometheus.NewDesc("vpool_audit_records_dropped_total", "Audit records dropped because the store did not take them in time (a gap record counts them).", nil, nil),
		queued:    prometheus.NewDesc("vpool_audit_records_queued", "Audit records waiting for the store.", nil, nil),
	})
}

type auditCollector struct {
	fn                                           func() AuditStats
	written, batches, conflicts, dropped, queued *prometheus.Desc
}

func (c auditCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.written, c.batches, c.conflicts, c.dropped, c.queued} {
		ch <- d
	}
}

func (c auditCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.fn()
	ch <- prometheus.MustNewConstMetric(c.written, prometheus.CounterValue, float64(s.Written))
	ch <- prometheus.MustNewConstMetric(c.batches, prometheus.CounterValue, float64(s.Batches))
	ch <- prometheus.MustNewConstMetric(c.conflicts, prometheus.CounterValue, float64(s.Conflicts))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.Dropped))
	ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(s.Queued))
}
