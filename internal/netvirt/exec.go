package netvirt

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Exec runs commands on this host (iproute2, bridge, tc, nft, sysctl),
// or inside the network namespace Netns when it is set (a "host" of a
// test, or an agent that keeps its networks in a namespace).
type Exec struct {
	Netns string
}

// Run implements System.
func (e Exec) Run(ctx context.Context, c Cmd) ([]byte, error) {
	path, args := c.Path, c.Args
	// Namespaces are made and entered from outside: `ip netns add` under
	// `ip netns exec` would mount the new namespace in a private mount
	// namespace that vanishes with the command.
	nsCmd := c.Path == "ip" && len(c.Args) > 0 && (c.Args[0] == "netns" || c.Args[0] == "-n" ||
		len(c.Args) > 1 && c.Args[1] == "netns")
	if e.Netns != "" && !nsCmd {
		path, args = "ip", append([]string{"netns", "exec", e.Netns, c.Path}, c.Args...)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	if c.Stdin != "" {
		cmd.Stdin = strings.NewReader(c.Stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("netvirt: %s %s: %w: %s", c.Path, strings.Join(c.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

var _ System = Exec{}
