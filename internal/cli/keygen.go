package cli

import (
	"crypto/ed25519"
	"encoding/hex"
	"flag"
	"fmt"
	"io"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
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
	fmt.Fprintln(stdout, newSigningKey().SynapseString())
	return ExitOK
}

// newSigningKey makes a key whose version keeps to the spec's grammar (letters, digits and
// _): mautrix names its keys with URL-safe base64, which may hold -.
func newSigningKey() *mfed.SigningKey {
	key := mfed.GenerateSigningKey()
	pub := key.Priv.Public().(ed25519.PublicKey)
	key.ID = id.NewKeyID(id.KeyAlgorithmEd25519, "a_"+hex.EncodeToString(pub[:4]))
	return key
}
