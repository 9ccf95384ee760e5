package dendrite

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"
)

// configTemplate is dendrite.yaml. Keys checked against v0.13.8's generate-config (-ci) output
// and setup/config; anything not named here keeps Dendrite's default.
var configTemplate = template.Must(template.New("dendrite.yaml").Parse(`# Written by roomsync's internal/dendrite: a throwaway Dendrite {{.Version}} for tests and the demo.
version: 2
global:
  server_name: "{{.Name}}"
  private_key: {{.Dir}}/matrix_key.pem
  key_validity_period: 168h0m0s
  database:
    connection_string: ""
  disable_federation: false
  presence:
    enable_inbound: false
    enable_outbound: false
  trusted_third_party_id_servers: []
  jetstream:
    storage_path: {{.Dir}}/jetstream
    addresses: []
    topic_prefix: Dendrite
    in_memory: false
  metrics:
    enabled: false
  dns_cache:
    enabled: false
  server_notices:
    enabled: false
  report_stats:
    enabled: false
client_api:
  registration_disabled: true
  registration_shared_secret: "{{.Secret}}"
  guests_disabled: true
  enable_registration_captcha: false
  rate_limiting:
    enabled: false
federation_api:
  database:
    connection_string: file:{{.Dir}}/dendrite_federationapi.db
  # Peers (roomsync) run on loopback with self-signed certificates.
  disable_tls_validation: true
  # Fetch every key from its server: no notary (matrix.org is unreachable and irrelevant).
  key_perspectives: []
  prefer_direct_fetch: true
key_server:
  database:
    connection_string: file:{{.Dir}}/dendrite_keyserver.db
media_api:
  database:
    connection_string: file:{{.Dir}}/dendrite_mediaapi.db
  base_path: {{.Dir}}/media
room_server:
  default_room_version: "11"
  database:
    connection_string: file:{{.Dir}}/dendrite_roomserver.db
sync_api:
  database:
    connection_string: file:{{.Dir}}/dendrite_syncapi.db
  search:
    enabled: false
user_api:
  bcrypt_cost: 4
  account_database:
    connection_string: file:{{.Dir}}/dendrite_userapi.db
relay_api:
  database:
    connection_string: file:{{.Dir}}/dendrite_relayapi.db
mscs:
  mscs: []
  database:
    connection_string: file:{{.Dir}}/dendrite_mscs.db
logging:
- type: std
  level: info
`))

// writeConfig writes dir/dendrite.yaml for the server name and shared secret.
func writeConfig(dir, name, secret string) error {
	var b strings.Builder
	err := configTemplate.Execute(&b, struct{ Version, Dir, Name, Secret string }{Version, dir, name, secret})
	if err != nil {
		return fmt.Errorf("render dendrite.yaml: %w", err)
	}
	if err := os.WriteFile(configPath(dir), []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write dendrite.yaml: %w", err)
	}
	return nil
}

func configPath(dir string) string { return filepath.Join(dir, "dendrite.yaml") }
