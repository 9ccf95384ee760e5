package cli

import (
	"flag"
	"fmt"
	"io"

	mfed "maunium.net/go/mautrix/federation"
)

// runKeygen prints a new signing key in Synapse's format (`ed25519 <key id> <base64 seed>`),
// the format --signing-key reads.
func runKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("roomsync keygen", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: roomsync keygen > signing.key")
		fmt.Fprintln(stderr, "Prints a new ed25519 federation signing key in Synapse's format.")
	}
	if code, done := parseArgs(fs, args, stderr); done {
		return code
	}
	fmt.Fprintln(stdout, mfed.GenerateSigningKey().SynapseString())
	return ExitOK
}
