package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Secrets never come from the command line, where every local user
// reads them in ps: they come from a file or the environment.

// joinToken returns the agent's join token: from --join-token-file, else
// VPOOL_JOIN_TOKEN, else the --join-token flag (which still works, with
// a warning).
func joinToken(flag, file string, log *slog.Logger) (string, error) {
	if file != "" {
		if flag != "" {
			return "", errors.New("give the join token once: --join-token-file or --join-token, not both")
		}
		return readSecret("--join-token-file", file, log)
	}
	if env := strings.TrimSpace(os.Getenv("VPOOL_JOIN_TOKEN")); env != "" && flag == "" {
		return env, nil
	}
	if flag != "" {
		log.Warn("the join token was given on the command line, where every local user can read it (ps); use --join-token-file or VPOOL_JOIN_TOKEN")
	}
	return flag, nil
}

// etcdPassword returns the password of --etcd-user: from
// --etcd-password-file, else VPOOL_ETCD_PASSWORD.
func etcdPassword(user, file string) (string, error) {
	if user == "" {
		if file != "" {
			return "", errors.New("--etcd-password-file needs --etcd-user")
		}
		return "", nil
	}
	if file != "" {
		return readSecret("--etcd-password-file", file, nil)
	}
	if p := os.Getenv("VPOOL_ETCD_PASSWORD"); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("--etcd-user %s needs a password: --etcd-password-file FILE or the environment variable VPOOL_ETCD_PASSWORD", user)
}

// readSecret reads a one-line secret file; it warns (when log is set)
// when others may read the file.
func readSecret(flag, path string, log *slog.Logger) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	if log != nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("a secret file is readable by others; chmod 600 it", "file", path, "mode", fi.Mode().Perm().String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", flag, path)
	}
	return s, nil
}
