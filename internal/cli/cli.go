// Package cli holds the roomsync subcommands. Each one parses its own flags and returns an
// exit code: 0 on success, 1 when the work did not complete, 2 on bad input.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit codes shared by every subcommand.
const (
	ExitOK       = 0
	ExitFailed   = 1
	ExitBadInput = 2
)

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"manager", "run the Kubernetes operator (the default subcommand)", runManager},
		{"sync", "pull rooms from peers into a store until they converge", runSync},
		{"inspect", "show what the store holds of a room", runInspect},
		{"export", "write a room out of the store: signed PDUs, client events or a transcript", runExport},
		{"fsck", "check a store's integrity (the database, each room's rows, every event verified again) and repair it", runFsck},
		{"keygen", "print a new signing key in Synapse's format", runKeygen},
	}
}

// Main dispatches to a subcommand. With no subcommand, or flags first, it runs the manager, so
// `roomsync --leader-elect` works as in any kubebuilder project.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return runManager(args, stdout, stderr)
	}
	switch args[0] {
	case "help":
		usage(stdout)
		return ExitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "roomsync: unknown subcommand %q\n\n", args[0])
	usage(stderr)
	return ExitBadInput
}

// parseArgs parses a subcommand's flags and refuses positional arguments. When done is true
// the subcommand returns code at once (help was shown, or the arguments were bad).
func parseArgs(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK, true
		}
		return ExitBadInput, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments: %v\n", fs.Name(), fs.Args())
		return ExitBadInput, true
	}
	return ExitOK, false
}

// badInput reports an error in what the user gave and returns ExitBadInput.
func badInput(stderr io.Writer, fs *flag.FlagSet, err error) int {
	fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
	return ExitBadInput
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: roomsync <subcommand> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'roomsync <subcommand> -h' for its flags.")
}
