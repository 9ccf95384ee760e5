package federation

import (
	"strings"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
)

func TestParseSigningKey(t *testing.T) {
	good := mfed.GenerateSigningKey()
	goodLine := good.SynapseString()
	fields := strings.Fields(goodLine) // ed25519 VERSION SEED
	version, seed := fields[1], fields[2]
	cases := []struct {
		name, line string
		wantErr    string // empty: the good key
	}{
		{"keygen output", goodLine, ""},
		{"padded seed", goodLine + "=", ""},
		{"extra spaces", "ed25519  " + version + "\t" + seed, ""},
		{"seed of 3 bytes", "ed25519 a_x QUJD", "the seed is 3 bytes, an ed25519 seed is 32"},
		{"seed of 33 bytes", "ed25519 a_x " + seed + "QUJD", "the seed is 35 bytes"},
		{"empty seed", "ed25519 a_x =", "the seed is 0 bytes"},
		{"seed not base64", "ed25519 a_x !!!notbase64", "the seed is not base64"},
		{"unknown algorithm", "curve25519 " + version + " " + seed, `algorithm "curve25519" is not supported, only ed25519`},
		{"missing seed", "ed25519 " + version, "2 fields, want `ed25519 VERSION SEED`"},
		{"bare algorithm", "ed25519", "1 fields"},
		{"extra field", goodLine + " more", "4 fields"},
		{"bad version", "ed25519 a:x " + seed, `key version "a:x" may hold only letters, digits, _ and -`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var key *mfed.SigningKey
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("ParseSigningKey(%q) panicked: %v", tc.line, r)
					}
				}()
				key, err = ParseSigningKey(tc.line)
			}()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("ParseSigningKey(%q) = %v", tc.line, err)
			case tc.wantErr == "" && (key.ID != good.ID || key.Pub != good.Pub):
				t.Errorf("parsed %s %s, want %s %s", key.ID, key.Pub, good.ID, good.Pub)
			case tc.wantErr != "" && err == nil:
				t.Errorf("ParseSigningKey(%q) accepted a bad key", tc.line)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("ParseSigningKey(%q) = %q, want it to say %q", tc.line, err, tc.wantErr)
			}
		})
	}
}
