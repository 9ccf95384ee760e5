package resolver

import (
	"errors"
	"fmt"
	"strings"

	"github.com/go-logr/logr"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/resolver/federation"
	"github.com/roomsync/roomsync/store"
)

// Peer is a homeserver to pull from, as the user named it (`--peer NAME[=URL]`, or a
// RoomSync's spec.peers).
type Peer struct {
	// ServerName is the peer's Matrix server name.
	ServerName string
	// URL is the base URL of its federation API; empty finds it by server discovery.
	URL string
	// InsecureSkipTLSVerify accepts any certificate from it, however it is reached.
	InsecureSkipTLSVerify bool
}

// Setup is what `roomsync sync` and the operator give to start syncing: who we are, where
// events go, which peers to pull from and how hard.
type Setup struct {
	Store store.Store
	// ServerName and Key are our federation identity.
	ServerName string
	Key        *mfed.SigningKey
	// Peers in order of preference.
	Peers []Peer
	// AllowPrivateNetworks lets server discovery delegate to loopback and private addresses.
	AllowPrivateNetworks bool
	// JoinUser is the localpart of our user in make_join requests and joins ("roomsync" when
	// empty).
	JoinUser string
	// Join is the membership policy (JoinNever when empty).
	Join      JoinPolicy
	Limits    Limits
	Observer  Observer
	Log       logr.Logger
	UserAgent string
}

// Open builds a Resolver with its own federation client, key ring and peer health from a
// Setup. Close releases its connections.
func Open(s Setup) (*Resolver, error) {
	if len(s.Peers) == 0 {
		return nil, errors.New("resolver: no peers")
	}
	names := make([]string, 0, len(s.Peers))
	endpoints := make(map[string]federation.Endpoint, len(s.Peers))
	for _, peer := range s.Peers {
		if _, dup := endpoints[peer.ServerName]; dup {
			return nil, fmt.Errorf("peer %s is named twice", peer.ServerName)
		}
		ep := federation.DiscoveredEndpoint(peer.InsecureSkipTLSVerify)
		if peer.URL != "" {
			var err error
			if ep, err = federation.ParseEndpoint(peer.URL, peer.InsecureSkipTLSVerify); err != nil {
				return nil, fmt.Errorf("peer %s: %w", peer.ServerName, err)
			}
		}
		endpoints[peer.ServerName] = ep
		names = append(names, peer.ServerName)
		if peer.InsecureSkipTLSVerify && !strings.HasPrefix(peer.URL, "http://") {
			// Said once per resolver, which lives as long as its RoomSync's spec: whoever sits
			// on the path to this peer can answer for it, keys included.
			s.Log.Info("Warning: TLS certificates of this peer are not verified (insecureSkipTLSVerify)",
				"peer", peer.ServerName)
		}
	}
	client, err := federation.NewClient(federation.Options{
		ServerName:           s.ServerName,
		Key:                  s.Key,
		Endpoints:            endpoints,
		AllowPrivateNetworks: s.AllowPrivateNetworks,
		UserAgent:            s.UserAgent,
	})
	if err != nil {
		return nil, err
	}
	joinUser := s.JoinUser
	if joinUser == "" {
		joinUser = "roomsync"
	}
	peers := NewPeerSet(names)
	keys := federation.NewKeyRing(client, peers.Reachable).
		WithKeyStore(KeyStoreOf(s.Store)).
		WithRetryAfterRecovery(peers.RetrySince).
		WithOwnKey(s.ServerName, s.Key)
	r, err := New(Config{
		Store:      s.Store,
		Client:     client,
		Keys:       keys.Key,
		Peers:      peers,
		JoinUserID: "@" + joinUser + ":" + s.ServerName,
		Join:       s.Join,
		ServerName: s.ServerName,
		SigningKey: s.Key,
		Limits:     s.Limits,
		Observer:   s.Observer,
		Log:        s.Log,
	})
	if err != nil {
		client.Close()
		return nil, err
	}
	return r, nil
}

// Close drops the idle connections of the resolver's federation client.
func (r *Resolver) Close() { r.cfg.Client.Close() }

// InboundKeys builds the key ring that checks the signed requests peers send to our listener.
// Their origins are found by server discovery (loopback and private addresses only with
// allowPrivateNetworks; any certificate with insecure), and verified keys are cached and
// kept like the sync's. The returned function releases its connections.
func InboundKeys(st store.Store, serverName string, key *mfed.SigningKey, allowPrivateNetworks, insecure bool) (*federation.KeyRing, func(), error) {
	client, err := federation.NewClient(federation.Options{
		ServerName: serverName, Key: key, AllowPrivateNetworks: allowPrivateNetworks, InsecureDiscovery: insecure,
		UserAgent: "roomsync",
	})
	if err != nil {
		return nil, nil, err
	}
	ring := federation.NewKeyRing(client, func() []string { return nil }).
		WithKeyStore(KeyStoreOf(st)).
		WithOwnKey(serverName, key)
	return ring, client.Close, nil
}
