package v1alpha1

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// The rules of the RoomSync fields that other inputs share: the CLI validates its --room and
// --peer flags with them, and the controller a spec the API server admitted before a rule
// existed. The kubebuilder markers of roomsync_types.go cannot name these constants, so
// TestRulesMatchCRD compares them with the generated CRD.
const (
	// RoomIDPattern is printable ASCII after the sigil: `!opaque:server.name` (room
	// versions 1 to 11) and `!hash` (12) alike.
	RoomIDPattern   = `^![!-~]+$`
	RoomIDMinLength = 2
	RoomIDMaxLength = 255

	// ServerNamePattern is a DNS name, IPv4 address or bracketed IPv6 address, with an
	// optional port; ServerNameMaxPort bounds the port, which the pattern cannot.
	ServerNamePattern   = `^(\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z.-]{1,255})(:[0-9]{1,5})?$`
	ServerNameMinLength = 1
	ServerNameMaxLength = 255
	ServerNameMaxPort   = 65535

	// PeerURLPattern and PeerURLMaxLength are the schema's checks of a peer URL; the CEL
	// rules beside them refuse what ValidatePeerURL refuses beyond that.
	PeerURLPattern   = `^https?://`
	PeerURLMaxLength = 2048

	// UserLocalpartPattern is the localpart of a user ID as the spec allows new ones to be
	// made; UserLocalpartMaxLength keeps a user ID well under the spec's 255 bytes.
	UserLocalpartPattern   = `^[a-z0-9._=/+-]+$`
	UserLocalpartMaxLength = 64

	// InsecurePlainHTTPMessage refuses insecureSkipTLSVerify with an http:// url: a setting
	// that cannot apply is refused rather than ignored, lest the user believe it does.
	InsecurePlainHTTPMessage = "insecureSkipTLSVerify applies only to TLS: url is plain http"
)

var (
	roomIDRE     = regexp.MustCompile(RoomIDPattern)
	serverNameRE = regexp.MustCompile(ServerNamePattern)
	peerURLRE    = regexp.MustCompile(PeerURLPattern)
	portSuffixRE = regexp.MustCompile(`:[0-9]+$`)
	localpartRE  = regexp.MustCompile(UserLocalpartPattern)
)

// ValidateUserLocalpart checks the localpart of our joining user (spec.membership.user,
// --join-user).
func ValidateUserLocalpart(localpart string) error {
	if localpart == "" || len(localpart) > UserLocalpartMaxLength || !localpartRE.MatchString(localpart) {
		return fmt.Errorf("%q is not a user localpart (1 to %d of a-z, 0-9, and ._=/+-)", shorten(localpart), UserLocalpartMaxLength)
	}
	return nil
}

// ValidateRoomID applies the schema of rooms[].id.
func ValidateRoomID(id string) error {
	switch {
	case !strings.HasPrefix(id, "!"):
		return fmt.Errorf("%s is not a room ID: room IDs start with !", shorten(id))
	case len(id) < RoomIDMinLength || len(id) > RoomIDMaxLength:
		return fmt.Errorf("%s is not a room ID: it has %d characters, a room ID has %d to %d",
			shorten(id), len(id), RoomIDMinLength, RoomIDMaxLength)
	case !roomIDRE.MatchString(id):
		return fmt.Errorf("%s is not a room ID: after the ! it may hold only printable ASCII, no space or control character", shorten(id))
	}
	return nil
}

// ValidateServerName applies the schema of peers[].serverName.
func ValidateServerName(name string) error {
	const grammar = "host, IPv4 or [IPv6], optional :port"
	switch {
	case len(name) < ServerNameMinLength || len(name) > ServerNameMaxLength:
		return fmt.Errorf("%s is not a Matrix server name: it has %d characters, a server name has %d to %d",
			shorten(name), len(name), ServerNameMinLength, ServerNameMaxLength)
	case !serverNameRE.MatchString(name):
		return fmt.Errorf("%s is not a Matrix server name (%s)", shorten(name), grammar)
	}
	if portSuffixRE.MatchString(name) {
		port := name[strings.LastIndexByte(name, ':')+1:]
		if n, err := strconv.Atoi(port); err != nil || n > ServerNameMaxPort {
			return fmt.Errorf("%s is not a Matrix server name: port must be at most %d", shorten(name), ServerNameMaxPort)
		}
	}
	return nil
}

// ValidatePeerURL applies the schema of peers[].url: an absolute http(s) URL with a host, an
// optional port from 1 to 65535, an optional path, and no query, fragment or credentials,
// since the federation client appends /_matrix/... paths to it.
func ValidatePeerURL(raw string) error {
	if len(raw) > PeerURLMaxLength {
		return fmt.Errorf("has %d characters, at most %d are allowed", len(raw), PeerURLMaxLength)
	}
	if !peerURLRE.MatchString(raw) {
		return errors.New("want http(s)://host[:port][/path]")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL; the caller already names it.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			return uerr.Err
		}
		return err
	}
	switch {
	case u.Host == "" || u.Hostname() == "":
		return errors.New("has no host")
	case u.User != nil:
		return errors.New("must not carry credentials")
	case u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(raw, "?#"):
		return errors.New("must not have a query or fragment")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > ServerNameMaxPort {
			return fmt.Errorf("port %s is out of range (1 to %d)", port, ServerNameMaxPort)
		}
	}
	return nil
}

// ValidatePeerTLS applies the Peer rule that insecureSkipTLSVerify needs a peer reached over
// TLS: without url (discovery ends at https) or with an https:// one.
func ValidatePeerTLS(rawURL string, insecureSkipTLSVerify bool) error {
	if insecureSkipTLSVerify && strings.HasPrefix(rawURL, "http://") {
		return errors.New(InsecurePlainHTTPMessage)
	}
	return nil
}

// shorten quotes a value for an error message, cut short so that a huge one does not flood
// the message; %q also shows control characters.
func shorten(s string) string {
	const limit = 64
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:limit]) + "…"
}
