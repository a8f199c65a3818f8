// Command etcd is the etcd server, built from the published go.etcd.io/etcd/server/v3
// module at the version pinned in this module's go.mod (the one the pinned Kubernetes
// release pairs with). It does exactly what etcd's own main package does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
