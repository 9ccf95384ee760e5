package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	mfed "maunium.net/go/mautrix/federation"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/resolver/federation"
)

// identityOptions are the flags `sync` and `manager` share: who we are on the federation,
// where events are stored, and where our key is served.
type identityOptions struct {
	storeURL             string
	serverName           string
	signingKeyFile       string
	listen               string
	tlsCert              string
	tlsKey               string
	insecureSkipVerify   bool
	allowPrivateNetworks bool
}

func (o *identityOptions) bind(fs *flag.FlagSet) {
	fs.StringVar(&o.storeURL, "store", "", "Event store URL: sqlite:///abs/path.db, sqlite://rel/path.db or postgres://…")
	fs.StringVar(&o.serverName, "server-name", "", "Our Matrix server name, the origin of our signed requests.")
	fs.StringVar(&o.signingKeyFile, "signing-key", "", "File holding our signing key in Synapse's format (see `roomsync keygen`).")
	fs.StringVar(&o.listen, "listen", "", "Address to serve our key on (/_matrix/key/v2/server) so peers can verify our requests; our server name must reach it.")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate for --listen (PEM); without it --listen serves plain HTTP, for use behind an ingress.")
	fs.StringVar(&o.tlsKey, "tls-key", "", "TLS private key for --listen (PEM).")
	fs.BoolVar(&o.insecureSkipVerify, "insecure-skip-tls-verify", false, "Accept any TLS certificate from the --peer servers, however they are reached (event signatures are still verified).")
	fs.BoolVar(&o.allowPrivateNetworks, "allow-private-networks", false, "Let .well-known and SRV delegation, and servers not named with --peer, lead to loopback and private addresses (a --peer name or URL as written may always use them).")
}

// validate checks the flags without touching files or the network.
func (o *identityOptions) validate() error {
	var errs []error
	if o.storeURL == "" {
		errs = append(errs, errors.New("--store is required"))
	}
	if o.serverName == "" {
		errs = append(errs, errors.New("--server-name is required"))
	} else if err := checkServerName(o.serverName); err != nil {
		errs = append(errs, fmt.Errorf("--server-name: %w", err))
	}
	if o.signingKeyFile == "" {
		errs = append(errs, errors.New("--signing-key is required"))
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if o.tlsCert != "" && o.listen == "" {
		errs = append(errs, errors.New("--tls-cert needs --listen"))
	}
	return errors.Join(errs...)
}

// checkServerName applies the RoomSync rule of a peer's server name, so that a flag takes what
// a RoomSync takes, and mautrix's grammar, with which the federation client reads the name.
func checkServerName(name string) error {
	if err := roomsyncv1alpha1.ValidateServerName(name); err != nil {
		return err
	}
	if _, _, ok := mfed.ParseServerName(name); !ok {
		return fmt.Errorf("%q is not a Matrix server name (host, IPv4 or [IPv6], optional :port)", name)
	}
	return nil
}

// checkPeerFlag checks a --peer NAME[=URL] as the RoomSync rules check a peer's serverName
// and url.
func checkPeerFlag(spec string) error {
	name, rawURL, hasURL := strings.Cut(spec, "=")
	if err := checkServerName(name); err != nil {
		return fmt.Errorf("--peer %s: %w", spec, err)
	}
	if hasURL {
		if err := roomsyncv1alpha1.ValidatePeerURL(rawURL); err != nil {
			return fmt.Errorf("--peer %s: URL %q: %w", spec, rawURL, err)
		}
	}
	return nil
}

// checkRoomFlag checks a --room as the RoomSync rules check rooms[].id.
func checkRoomFlag(room string) error {
	if err := roomsyncv1alpha1.ValidateRoomID(room); err != nil {
		return fmt.Errorf("--room %w", err)
	}
	return nil
}

// checkInsecureFlag refuses --insecure-skip-tls-verify when every peer is named with a plain
// http URL: a flag that cannot apply is refused, as a RoomSync refuses the peer setting.
func checkInsecureFlag(insecure bool, peers []string) error {
	if !insecure || len(peers) == 0 {
		return nil
	}
	for _, spec := range peers {
		_, rawURL, _ := strings.Cut(spec, "=")
		if roomsyncv1alpha1.ValidatePeerTLS(rawURL, true) == nil {
			return nil
		}
	}
	return errors.New("--insecure-skip-tls-verify applies only to TLS: every --peer has a plain http URL")
}

// keyServer serves our key on --listen until stop is called, and returns the address it
// bound. It binds before returning, so a bad address fails at once rather than in the
// background. Its /_matrix/key/v2/query also vouches, as a notary, for the key responses
// vouched keeps (nil: for our own name only).
func (o *identityOptions) keyServer(key *mfed.SigningKey, version string, vouched federation.NotaryKeys, routes ...func(*federation.Server)) (addr string, stop func(), err error) {
	if o.listen == "" {
		return "", func() {}, nil
	}
	// A certificate that does not load fails here, at start, rather than in the goroutine.
	if o.tlsCert != "" {
		if _, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey); err != nil {
			return "", nil, fmt.Errorf("serve key on %s: %w", o.listen, err)
		}
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return "", nil, fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	srv := federation.NewServer()
	srv.HandleKeysAsNotary(o.serverName, key, version, vouched)
	for _, add := range routes {
		add(srv)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln, o.tlsCert, o.tlsKey) // ends with Shutdown
	}()
	return ln.Addr().String(), func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
		<-done
	}, nil
}
