// Command member runs one etcd member for etcdtest when the test binary
// that needs it has no etcdtest.MaybeRunMember hook. It is started only
// by etcdtest, which passes the member's configuration in the
// environment; it imports only etcdtest.
package main

import (
	"os"

	"github.com/vpool/vpool/internal/store/etcdstore/etcdtest"
)

func main() { os.Exit(etcdtest.RunMember()) }
