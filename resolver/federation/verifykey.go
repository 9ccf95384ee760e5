package federation

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// CheckVerifyKey says whether key is an ed25519 public key as the spec encodes it: unpadded
// base64 of 32 bytes. A server's key response is the word of whoever answered, and
// crypto/ed25519 panics on a key of another length, so a key is checked before it is kept or
// used.
func CheckVerifyKey(key id.SigningKey) error {
	raw, err := base64.RawStdEncoding.DecodeString(string(key))
	if err != nil {
		return fmt.Errorf("verify key is not unpadded base64: %w", err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return fmt.Errorf("verify key is %d bytes, not %d", len(raw), ed25519.PublicKeySize)
	}
	return nil
}
