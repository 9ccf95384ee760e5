package federation

import (
	"bufio"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"regexp"
	"strings"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// Signing key files, as Synapse writes them and `roomsync keygen` prints them.

// LoadSigningKey reads the first key line of a Synapse-format key file.
func LoadSigningKey(path string) (*mfed.SigningKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, err := ParseSigningKey(line)
		if err != nil {
			return nil, fmt.Errorf("signing key %s, line %d: %w", path, lineNo, err)
		}
		return key, nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read signing key %s: %w", path, err)
	}
	return nil, fmt.Errorf("signing key %s: the file holds no key (make one with `roomsync keygen`)", path)
}

// keyVersion is the grammar of a key version, the part of a key ID after "ed25519:": the
// spec's letters, digits and _, and also -, which mautrix-made keys (roomsync keygen before
// it used the spec's grammar) hold and which Synapse and Dendrite accept.
var keyVersion = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ParseSigningKey reads a Synapse key line, `ed25519 VERSION SEED`. Every part is checked
// here: mautrix's parser hands a seed of the wrong length to ed25519.NewKeyFromSeed, which
// panics.
func ParseSigningKey(line string) (*mfed.SigningKey, error) {
	const format = "want `ed25519 VERSION SEED` as `roomsync keygen` prints it"
	fields := strings.Fields(line)
	if len(fields) != 3 {
		return nil, fmt.Errorf("%d fields, %s", len(fields), format)
	}
	alg, version, seed64 := fields[0], fields[1], fields[2]
	if alg != string(id.KeyAlgorithmEd25519) {
		return nil, fmt.Errorf("algorithm %q is not supported, only ed25519", alg)
	}
	if !keyVersion.MatchString(version) {
		return nil, fmt.Errorf("key version %q may hold only letters, digits, _ and -", version)
	}
	// Synapse writes the seed unpadded and reads it either way.
	seed64 = strings.TrimRight(seed64, "=")
	seed, err := base64.RawStdEncoding.DecodeString(seed64)
	if err != nil {
		return nil, fmt.Errorf("the seed is not base64: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("the seed is %d bytes, an ed25519 seed is %d", len(seed), ed25519.SeedSize)
	}
	key, err := mfed.ParseSynapseKey(alg + " " + version + " " + seed64)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	return key, nil
}
