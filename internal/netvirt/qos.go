package netvirt

import (
	"strconv"
)

// qosState is what was last applied to one tap: its ifindex (a new tap,
// after a VM restart, has lost its qdiscs) and its rates.
type qosState struct {
	index   int
	in, out int64
}

// burst is the htb bucket: 10 ms at the rate, at least 16 KiB (several
// full-size frames, or TCP stalls at low rates).
func burst(kbps int64) string {
	b := max(kbps*1000/8/100, 16<<10)
	return strconv.FormatInt(b, 10) + "b"
}

func htb(dev string, kbps int64) []Cmd {
	rate := strconv.FormatInt(kbps, 10) + "kbit"
	return []Cmd{
		tc("qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1"),
		tc("class", "replace", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate, "burst", burst(kbps), "cburst", burst(kbps)),
	}
}

func htbRate(dev string, kbps int64) Cmd {
	rate := strconv.FormatInt(kbps, 10) + "kbit"
	return tc("class", "replace", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate, "burst", burst(kbps), "cburst", burst(kbps))
}

// qosCmds renders the change of one tap's limits from old to the port's.
// What the guest receives leaves the tap: htb at its root. What the
// guest sends enters the tap: its ingress qdisc redirects it to an ifb
// device, whose root htb shapes it. A rate change on a shaped tap only
// replaces the class (live, no qdisc is torn down).
func qosCmds(pt Port, index int, old qosState, known, ifbExists bool) []Cmd {
	fresh := !known || old.index != index
	var cmds []Cmd
	switch {
	case pt.IngressKbps > 0 && (fresh || old.in == 0):
		cmds = append(cmds, htb(pt.Tap, pt.IngressKbps)...)
	case pt.IngressKbps > 0 && old.in != pt.IngressKbps:
		cmds = append(cmds, htbRate(pt.Tap, pt.IngressKbps))
	case pt.IngressKbps == 0 && !fresh && old.in > 0:
		cmds = append(cmds, tc("qdisc", "del", "dev", pt.Tap, "root"))
	}
	ifb := IFBName(pt.Tap)
	switch {
	case pt.EgressKbps > 0 && (fresh || old.out == 0):
		if !ifbExists {
			cmds = append(cmds, ip("link", "add", ifb, "type", "ifb"))
		}
		cmds = append(cmds, ip("link", "set", ifb, "up"))
		cmds = append(cmds, htb(ifb, pt.EgressKbps)...)
		cmds = append(cmds,
			tc("qdisc", "replace", "dev", pt.Tap, "handle", "ffff:", "ingress"),
			tc("filter", "replace", "dev", pt.Tap, "parent", "ffff:", "protocol", "all", "prio", "1", "handle", "800::1",
				"u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb))
	case pt.EgressKbps > 0 && old.out != pt.EgressKbps:
		cmds = append(cmds, htbRate(ifb, pt.EgressKbps))
	case pt.EgressKbps == 0 && !fresh && old.out > 0:
		cmds = append(cmds, tc("qdisc", "del", "dev", pt.Tap, "ingress")) // the ifb goes with the links' gc
	}
	return cmds
}
