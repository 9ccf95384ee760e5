// Package federation is roomsync's side of the Matrix server-server API: a client that signs
// its requests (X-Matrix) with our key and reaches each peer either directly (a URL the user
// named) or through server discovery, a key ring that fetches and caches other servers'
// signing keys, and the handler that serves our own key to peers.
//
// The protocol work (canonical JSON, signing, event IDs, content hashes, redaction) is
// mautrix's; this package adds routing, limits, error classification and caching.
package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// Defaults for Options fields left zero.
const (
	DefaultRequestTimeout   = 60 * time.Second
	DefaultDialTimeout      = 10 * time.Second
	DefaultMaxResponseBytes = 64 << 20
)

// Options configure a Client.
type Options struct {
	// ServerName is our server name: the origin of every signed request.
	ServerName string
	// Key is our signing key.
	Key *mfed.SigningKey
	// Endpoints are the peers the user named, by server name: with a URL, or found by server
	// discovery from the name (see Endpoint).
	Endpoints map[string]Endpoint
	// AllowPrivateNetworks lets server discovery lead to loopback and private addresses
	// through .well-known and SRV delegation, and for servers the user did not name. The
	// name a user wrote, and a URL the user gave, may always use them.
	AllowPrivateNetworks bool
	// RequestTimeout bounds one request, body included.
	RequestTimeout time.Duration
	// MaxResponseBytes caps a response body; a larger one is an error, not a truncation.
	MaxResponseBytes int64
	// UserAgent is sent with every request.
	UserAgent string
	// InsecureDiscovery accepts any certificate from servers reached through discovery too
	// (the operator's --insecure-skip-tls-verify, for the origins of signed requests to us).
	InsecureDiscovery bool
	// RootCAs verifies the certificates of peers with an explicit endpoint (a private CA for
	// in-cluster homeservers); nil uses the system's.
	RootCAs *x509.CertPool
}

// Client makes signed federation requests.
type Client struct {
	fed        *mfed.Client
	serverName string
	endpoints  map[string]Endpoint
	// insecureDiscovery: servers reached through discovery are not TLS-verified either.
	insecureDiscovery bool
}

// NewClient builds a client. It does no I/O.
func NewClient(opts Options) (*Client, error) {
	if opts.ServerName == "" {
		return nil, errors.New("federation client: no server name")
	}
	if opts.Key == nil {
		return nil, errors.New("federation client: no signing key")
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = DefaultMaxResponseBytes
	}
	settings := exhttp.ClientSettings{
		DialTimeout:           DefaultDialTimeout,
		GlobalTimeout:         opts.RequestTimeout,
		TLSHandshakeTimeout:   DefaultDialTimeout,
		ResponseHeaderTimeout: opts.RequestTimeout,
		IdleConnTimeout:       90 * time.Second,
	}
	fed := mfed.NewClient(opts.ServerName, opts.Key, mfed.NewInMemoryCache(), settings)
	if opts.AllowPrivateNetworks {
		fed.AllowIP = func(net.IP) bool { return true }
	}
	if srt, ok := fed.HTTP.Transport.(*mfed.ServerResolvingTransport); ok && opts.InsecureDiscovery {
		srt.Transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true} //nolint:gosec // asked for
	}
	fed.ResponseSizeLimit = opts.MaxResponseBytes
	if opts.UserAgent != "" {
		fed.UserAgent = opts.UserAgent
	}
	endpoints := make(map[string]Endpoint, len(opts.Endpoints))
	for name, ep := range opts.Endpoints {
		endpoints[name] = ep
	}
	fed.HTTP = &http.Client{
		Transport: newRoutingTransport(endpoints, fed.HTTP.Transport, opts.AllowPrivateNetworks, DefaultDialTimeout, opts.RootCAs),
		Timeout:   opts.RequestTimeout,
		// Federation requests do not follow redirects.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Client{fed: fed, serverName: opts.ServerName, endpoints: endpoints, insecureDiscovery: opts.InsecureDiscovery}, nil
}

// VerifiedOrigin reports whether requests to server reach the server itself over TLS that was
// verified: through server discovery or a URL, with the certificate checked. Keys
// fetched that way may be kept; keys from a notary, or over a channel anyone could answer,
// are used for the session only.
func (c *Client) VerifiedOrigin(server string) bool {
	ep, ok := c.endpoints[server]
	if !ok {
		return !c.insecureDiscovery
	}
	return !ep.InsecureSkipTLSVerify && (ep.BaseURL == nil || ep.BaseURL.Scheme == "https")
}

// ServerName is the origin the client signs as.
func (c *Client) ServerName() string { return c.serverName }

// Close drops idle connections.
func (c *Client) Close() { c.fed.HTTP.CloseIdleConnections() }

// Backfill asks peer for up to limit events preceding (and including) the events in from.
func (c *Client) Backfill(ctx context.Context, peer, roomID string, from []string, limit int) ([]json.RawMessage, error) {
	params := mfed.RequestParams{
		ServerName:   peer,
		Method:       http.MethodGet,
		Path:         mfed.URLPath{"v1", "backfill", id.RoomID(roomID)},
		Query:        url.Values{"limit": {strconv.Itoa(limit)}, "v": from},
		Authenticate: true,
	}
	var pdus []json.RawMessage
	err := c.fetchAnswer(ctx, params, c.fed.ResponseSizeLimit, "/backfill", func(body io.Reader, maxBytes int64) error {
		var err error
		// Servers count the v events they repeat within the limit or on top of it.
		pdus, err = decodePDUs(body, maxBytes, "/backfill", "pdus", max(limit, 0)+len(from))
		return err
	})
	return pdus, err
}

// MissingEvents asks peer for events preceding latest that are not preceded by earliest.
// The limit is always sent: Dendrite answers 500 without one.
func (c *Client) MissingEvents(ctx context.Context, peer, roomID string, earliest, latest []string, limit int, minDepth int64) ([]json.RawMessage, error) {
	req := &mfed.ReqGetMissingEvents{
		ServerName:     peer,
		RoomID:         id.RoomID(roomID),
		EarliestEvents: toEventIDs(earliest),
		LatestEvents:   toEventIDs(latest),
		Limit:          max(limit, 1),
		MinDepth:       int(minDepth),
	}
	params := mfed.RequestParams{
		ServerName:   peer,
		Method:       http.MethodPost,
		Path:         mfed.URLPath{"v1", "get_missing_events", req.RoomID},
		Authenticate: true,
		RequestJSON:  req,
	}
	var pdus []json.RawMessage
	err := c.fetchAnswer(ctx, params, c.fed.ResponseSizeLimit, "/get_missing_events", func(body io.Reader, maxBytes int64) error {
		var err error
		pdus, err = decodePDUs(body, maxBytes, "/get_missing_events", "events", req.Limit)
		return err
	})
	return pdus, err
}

// Event fetches one event by ID.
func (c *Client) Event(ctx context.Context, peer, eventID string) (json.RawMessage, error) {
	params := mfed.RequestParams{
		ServerName:   peer,
		Method:       http.MethodGet,
		Path:         mfed.URLPath{"v1", "event", id.EventID(eventID)},
		Authenticate: true,
	}
	var pdus []json.RawMessage
	err := c.fetchAnswer(ctx, params, c.fed.ResponseSizeLimit, "/event", func(body io.Reader, maxBytes int64) error {
		var err error
		pdus, err = decodePDUs(body, maxBytes, "/event", "pdus", 1)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(pdus) != 1 {
		return nil, fmt.Errorf("%w: /event answered with %d PDUs, want 1", ErrBadResponse, len(pdus))
	}
	return pdus[0], nil
}

// LatestEvent asks peer for its newest event in the room at or before now
// (/timestamp_to_event with dir=b). Dendrite v0.13.8 does not serve it (404 M_UNRECOGNIZED).
func (c *Client) LatestEvent(ctx context.Context, peer, roomID string, now time.Time) (string, error) {
	params := mfed.RequestParams{
		ServerName: peer,
		Method:     http.MethodGet,
		Path:       mfed.URLPath{"v1", "timestamp_to_event", id.RoomID(roomID)},
		Query: url.Values{
			"dir": {string(mautrix.DirectionBackward)},
			"ts":  {strconv.FormatInt(now.UnixMilli(), 10)},
		},
		Authenticate: true,
	}
	var resp *mautrix.RespTimestampToEvent
	err := c.fetchAnswer(ctx, params, maxTimestampAnswerBytes, "/timestamp_to_event", func(body io.Reader, maxBytes int64) error {
		return unmarshalSmall(body, maxBytes, "/timestamp_to_event", &resp)
	})
	if err != nil {
		return "", err
	}
	if resp == nil || resp.EventID == "" {
		return "", fmt.Errorf("%w: /timestamp_to_event gave no event ID", ErrBadResponse)
	}
	return string(resp.EventID), nil
}

// JoinTemplate asks peer for a join event template (make_join) for userID, which joins
// nothing by itself: its prev_events are the peer's latest events in the room, and it names
// the room version.
func (c *Client) JoinTemplate(ctx context.Context, peer, roomID, userID string, versions []string) (roomVersion string, prevEvents []string, err error) {
	roomVersion, event, err := c.MakeJoin(ctx, peer, roomID, userID, versions)
	if err != nil {
		return "", nil, err
	}
	return roomVersion, ReferencedIDs(event, "prev_events"), nil
}

// MakeJoin asks peer for the template of userID's join event (make_join), offering the room
// versions we support (without them, servers assume version 1).
func (c *Client) MakeJoin(ctx context.Context, peer, roomID, userID string, versions []string) (roomVersion string, template json.RawMessage, err error) {
	params := mfed.RequestParams{
		ServerName:   peer,
		Method:       http.MethodGet,
		Path:         mfed.URLPath{"v1", "make_join", id.RoomID(roomID), id.UserID(userID)},
		Query:        url.Values{"ver": versions},
		Authenticate: true,
	}
	err = c.fetchAnswer(ctx, params, c.fed.ResponseSizeLimit, "/make_join", func(body io.Reader, maxBytes int64) error {
		var err error
		// The template is a PDU, at most MaxPDUBytes: that bounds its prev_events.
		roomVersion, template, err = decodeJoinTemplate(body, maxBytes)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	if len(template) == 0 || string(template) == "null" {
		return "", nil, fmt.Errorf("%w: /make_join gave no event", ErrBadResponse)
	}
	return roomVersion, template, nil
}

// MakeLeave asks peer for the template of userID's leave event (make_leave).
func (c *Client) MakeLeave(ctx context.Context, peer, roomID, userID string) (roomVersion string, template json.RawMessage, err error) {
	params := mfed.RequestParams{
		ServerName:   peer,
		Method:       http.MethodGet,
		Path:         mfed.URLPath{"v1", "make_leave", id.RoomID(roomID), id.UserID(userID)},
		Authenticate: true,
	}
	err = c.fetchAnswer(ctx, params, c.fed.ResponseSizeLimit, "/make_leave", func(body io.Reader, maxBytes int64) error {
		var err error
		roomVersion, template, err = decodeJoinTemplate(body, maxBytes)
		return err
	})
	if err == nil && (len(template) == 0 || string(template) == "null") {
		err = fmt.Errorf("%w: /make_leave gave no event", ErrBadResponse)
	}
	return roomVersion, template, err
}

// SendLeave sends our signed leave event to peer (send_leave v2).
func (c *Client) SendLeave(ctx context.Context, peer, roomID, eventID string, event json.RawMessage) error {
	params := mfed.RequestParams{
		ServerName:   peer,
		Method:       http.MethodPut,
		Path:         mfed.URLPath{"v2", "send_leave", id.RoomID(roomID), id.EventID(eventID)},
		Authenticate: true,
		RequestJSON:  event,
	}
	return c.fetchAnswer(ctx, params, maxKeyAnswerBytes, "/send_leave", func(body io.Reader, maxBytes int64) error {
		_, err := readSmall(body, maxBytes, "/send_leave")
		return err
	})
}

// JoinAnswer is a resident server's answer to send_join: the room's state before our join,
// the auth chain of that state and of our join, and our join as the server stored it.
type JoinAnswer struct {
	State, AuthChain []json.RawMessage
	Event            json.RawMessage
}

// maxJoinPDUs bounds the state and auth chain of a send_join answer: the largest public rooms
// hold some hundred thousand members, whose membership events are all state.
const maxJoinPDUs = 500_000

// SendJoin sends our signed join event to peer (send_join v2, with every member's state).
func (c *Client) SendJoin(ctx context.Context, peer, roomID, eventID string, event json.RawMessage) (JoinAnswer, error) {
	params := mfed.RequestParams{
		ServerName:   peer,
		Method:       http.MethodPut,
		Path:         mfed.URLPath{"v2", "send_join", id.RoomID(roomID), id.EventID(eventID)},
		Query:        url.Values{"omit_members": {"false"}},
		Authenticate: true,
		RequestJSON:  event,
	}
	var ans JoinAnswer
	err := c.fetchAnswer(ctx, params, c.fed.ResponseSizeLimit, "/send_join", func(body io.Reader, maxBytes int64) error {
		var err error
		ans, err = decodeJoinAnswer(body, maxBytes)
		return err
	})
	return ans, err
}

// ReferencedIDs reads the event IDs of a PDU's prev_events or auth_events, which room
// versions 1 and 2 write as [ID, hashes] pairs and later versions as plain IDs.
func ReferencedIDs(pdu []byte, field string) []string {
	var ids []string
	for _, ref := range gjson.GetBytes(pdu, field).Array() {
		if ref.IsArray() {
			ref = ref.Get("0")
		}
		if ref.Type == gjson.String && ref.Str != "" {
			ids = append(ids, ref.Str)
		}
	}
	return ids
}

// ServerKeys fetches server's own signing keys from it (/_matrix/key/v2/server).
func (c *Client) ServerKeys(ctx context.Context, server string) (*mfed.ServerKeyResponse, error) {
	params := mfed.RequestParams{ServerName: server, Method: http.MethodGet, Path: mfed.KeyURLPath{"v2", "server"}}
	var resp *mfed.ServerKeyResponse
	err := c.fetchAnswer(ctx, params, maxKeyAnswerBytes, "/key/v2/server", func(body io.Reader, maxBytes int64) error {
		return unmarshalSmall(body, maxBytes, "/key/v2/server", &resp)
	})
	if err != nil {
		return nil, err
	}
	if resp == nil {
		return nil, fmt.Errorf("%w: empty /key/v2/server body", ErrBadResponse)
	}
	return resp, nil
}

// QueryKeys asks notary for server's signing keys (/_matrix/key/v2/query): the key keyID,
// or all the keys it knows of server when keyID is empty.
func (c *Client) QueryKeys(ctx context.Context, notary, server string, keyID id.KeyID) ([]*mfed.ServerKeyResponse, error) {
	criteria := map[id.KeyID]mfed.QueryKeysCriteria{}
	if keyID != "" {
		criteria[keyID] = mfed.QueryKeysCriteria{}
	}
	req := &mfed.ReqQueryKeys{ServerKeys: map[string]map[id.KeyID]mfed.QueryKeysCriteria{server: criteria}}
	params := mfed.RequestParams{ServerName: notary, Method: http.MethodPost, Path: mfed.KeyURLPath{"v2", "query"}, RequestJSON: req}
	var resp *mfed.QueryKeysResponse
	err := c.fetchAnswer(ctx, params, maxKeyAnswerBytes, "/key/v2/query", func(body io.Reader, maxBytes int64) error {
		return unmarshalSmall(body, maxBytes, "/key/v2/query", &resp)
	})
	if err != nil {
		return nil, err
	}
	if resp == nil {
		return nil, fmt.Errorf("%w: empty /key/v2/query body", ErrBadResponse)
	}
	return resp.ServerKeys, nil
}

func toEventIDs(ids []string) []id.EventID {
	out := make([]id.EventID, len(ids))
	for i, e := range ids {
		out[i] = id.EventID(e)
	}
	return out
}

// StateIDs asks peer for the room state at an event (/state_ids): the IDs of the state events
// and of their auth chain. Servers differ on "at": Synapse answers the state before the event,
// Dendrite v0.13.8 the state after it (the event included when it is a state event).
func (c *Client) StateIDs(ctx context.Context, peer, roomID, eventID string) (state, authChain []string, err error) {
	params := mfed.RequestParams{
		ServerName:   peer,
		Method:       http.MethodGet,
		Path:         mfed.URLPath{"v1", "state_ids", id.RoomID(roomID)},
		Query:        url.Values{"event_id": {eventID}},
		Authenticate: true,
	}
	err = c.fetchAnswer(ctx, params, c.fed.ResponseSizeLimit, "/state_ids", func(body io.Reader, maxBytes int64) error {
		var answer struct {
			PDUIDs       []string `json:"pdu_ids"`
			AuthChainIDs []string `json:"auth_chain_ids"`
		}
		if err := json.NewDecoder(io.LimitReader(body, maxBytes)).Decode(&answer); err != nil {
			return fmt.Errorf("%w: /state_ids: %w", ErrBadResponse, err)
		}
		for _, id := range append(slices.Clone(answer.PDUIDs), answer.AuthChainIDs...) {
			if !strings.HasPrefix(id, "$") {
				return fmt.Errorf("%w: /state_ids names %q, not an event ID", ErrBadResponse, id)
			}
		}
		state, authChain = answer.PDUIDs, answer.AuthChainIDs
		return nil
	})
	return state, authChain, err
}

// State asks peer for the room state at an event (/state): the state events and their auth
// chain, in full. "At" differs between servers as for StateIDs.
func (c *Client) State(ctx context.Context, peer, roomID, eventID string) (state, authChain []json.RawMessage, err error) {
	params := mfed.RequestParams{
		ServerName:   peer,
		Method:       http.MethodGet,
		Path:         mfed.URLPath{"v1", "state", id.RoomID(roomID)},
		Query:        url.Values{"event_id": {eventID}},
		Authenticate: true,
	}
	err = c.fetchAnswer(ctx, params, c.fed.ResponseSizeLimit, "/state", func(body io.Reader, maxBytes int64) error {
		ans, err := decodeStateAnswer(body, maxBytes, "/state", "pdus", maxJoinPDUs)
		state, authChain = ans.State, ans.AuthChain
		return err
	})
	return state, authChain, err
}
