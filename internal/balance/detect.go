package balance

import (
	"fmt"
	"math"
)

// Detector decides whether a host is overloaded. Detectors are evaluated
// against the planning state, optionally with a candidate VM added, so
// placement can ask "would this host be overloaded with that VM?".
type Detector interface {
	Name() string
	// overloaded reports whether host hi, with VM cand added (cand < 0:
	// none), is overloaded.
	overloaded(st *state, hi, cand int) bool
}

// LiteratureFallback is the static threshold the adaptive detectors fall
// back to while a host has too little history (CloudSim's examples).
const LiteratureFallback = 0.7

// Threshold is the static threshold detector (THR): overloaded when the
// requested CPU exceeds the threshold share of capacity.
type Threshold struct{ Limit float64 }

// Name implements Detector.
func (t Threshold) Name() string { return "thr" }

func (t Threshold) overloaded(st *state, hi, cand int) bool {
	return st.demandWith(hi, cand)/st.s.Hosts[hi].MIPS > t.Limit
}

// MAD is the median-absolute-deviation detector: the threshold is
// 1 - s·MAD(history), with the static fallback below 12 samples.
type MAD struct {
	S        float64
	Fallback Threshold
}

// Name implements Detector.
func (m MAD) Name() string { return "mad" }

func (m MAD) overloaded(st *state, hi, cand int) bool {
	h := st.history(hi, cand)
	if trimmedLen(h) < 12 {
		return m.Fallback.overloaded(st, hi, cand)
	}
	return st.demandWith(hi, cand)/st.s.Hosts[hi].MIPS > 1-m.S*mad(h)
}

// IQR is the interquartile-range detector: threshold 1 - s·IQR(history).
type IQR struct {
	S        float64
	Fallback Threshold
}

// Name implements Detector.
func (q IQR) Name() string { return "iqr" }

func (q IQR) overloaded(st *state, hi, cand int) bool {
	h := st.history(hi, cand)
	if trimmedLen(h) < 12 {
		return q.Fallback.overloaded(st, hi, cand)
	}
	return st.demandWith(hi, cand)/st.s.Hosts[hi].MIPS > 1-q.S*iqr(h)
}

// LocalRegression is the LR detector (and, with Robust, LRR): a line
// through the last 10 host utilisation samples predicts the utilisation
// one migration later; overloaded when prediction × S reaches 1.
type LocalRegression struct {
	S        float64
	Robust   bool
	Fallback Threshold
}

// Name implements Detector.
func (l LocalRegression) Name() string {
	if l.Robust {
		return "lrr"
	}
	return "lr"
}

func (l LocalRegression) overloaded(st *state, hi, cand int) bool {
	const length = 10
	h := st.history(hi, cand)
	if len(h) < length {
		return l.Fallback.overloaded(st, hi, cand)
	}
	var y [length]float64
	for i := 0; i < length; i++ {
		y[i] = h[length-i-1]
	}
	var a, b float64
	var ok bool
	if l.Robust {
		a, b, ok = robustLoess(y[:])
	} else {
		a, b, ok = loess(y[:])
	}
	if !ok {
		return l.Fallback.overloaded(st, hi, cand)
	}
	intervals := math.Ceil(st.maxMigrationSeconds(hi, cand) / st.s.Interval)
	pred := a + b*(length+intervals)
	pred *= l.S
	return pred >= 1
}

// NewDetector builds a detector by literature name (thr, mad, iqr, lr,
// lrr) with parameter p.
func NewDetector(name string, p float64) (Detector, error) {
	fb := Threshold{Limit: LiteratureFallback}
	switch name {
	case "thr":
		return Threshold{Limit: p}, nil
	case "mad":
		return MAD{S: p, Fallback: fb}, nil
	case "iqr":
		return IQR{S: p, Fallback: fb}, nil
	case "lr":
		return LocalRegression{S: p, Fallback: fb}, nil
	case "lrr":
		return LocalRegression{S: p, Robust: true, Fallback: fb}, nil
	}
	return nil, fmt.Errorf("%w: overload detector %q", ErrUnknownPolicy, name)
}
