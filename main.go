// Command roomsync replicates Matrix rooms into a cluster's event store.
//
//	roomsync [manager] [flags]   run the Kubernetes operator (the default)
//	roomsync help                list the subcommands
package main

import (
	"os"

	"github.com/roomsync/roomsync/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
