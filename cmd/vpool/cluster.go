package main

import (
	"errors"
	"log/slog"

	"github.com/spf13/cobra"
)

// serverClusterFlags adds the flags of a control plane of several
// servers (docs/ha.md) to `vpool server` and returns their values once
// parsed: the peer URL, the static initial cluster, or the servers to
// join through with the join token (from a file or VPOOL_JOIN_TOKEN,
// never the command line).
func serverClusterFlags(cmd *cobra.Command) func(log *slog.Logger) (peer, initial string, join []string, token string, err error) {
	f := cmd.Flags()
	peerURL := f.String("peer-url", "", "where this server's embedded etcd member serves raft to the other servers: https://HOST:PORT, fixed and reachable by them (with --join; --initial-cluster names it)")
	initial := f.String("initial-cluster", "", "start several servers together: NAME=https://HOST:PORT,... (each server's --name and peer URL); the first named creates the shared secrets, the others need copies (docs/ha.md)")
	joinURLs := f.String("join", "", "join a running control plane through these agent listeners (comma-separated https URLs), with a token from 'vpool cluster member add NAME' in --join-token-file or VPOOL_JOIN_TOKEN")
	tokenFile := f.String("join-token-file", "", "file holding the server join token (with --join; or env VPOOL_JOIN_TOKEN)")
	return func(log *slog.Logger) (string, string, []string, string, error) {
		join := splitList(*joinURLs)
		if len(join) == 0 {
			if *tokenFile != "" {
				return "", "", nil, "", errors.New("--join-token-file needs --join")
			}
			return *peerURL, *initial, nil, "", nil
		}
		tok, err := joinToken("", *tokenFile, log)
		if err != nil {
			return "", "", nil, "", err
		}
		return *peerURL, *initial, join, tok, nil
	}
}
