package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	mfed "maunium.net/go/mautrix/federation"

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
	fs.BoolVar(&o.insecureSkipVerify, "insecure-skip-tls-verify", false, "Accept any TLS certificate from peers named with a URL (event signatures are still verified).")
	fs.BoolVar(&o.allowPrivateNetworks, "allow-private-networks", false, "Let server discovery lead to loopback and private addresses (peers named with a URL may always use them).")
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

// checkServerName applies the Matrix grammar: a DNS name, IPv4 or [IPv6], optional port.
func checkServerName(name string) error {
	if _, _, ok := mfed.ParseServerName(name); !ok {
		return fmt.Errorf("%q is not a Matrix server name (host, IPv4 or [IPv6], optional :port)", name)
	}
	return nil
}

// loadSigningKey reads the first key line of a Synapse-format key file.
func loadSigningKey(path string) (*mfed.SigningKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, err := mfed.ParseSynapseKey(line)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", path, err)
		}
		return key, nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read signing key %s: %w", path, err)
	}
	return nil, fmt.Errorf("signing key %s: the file holds no key (make one with `roomsync keygen`)", path)
}

// keyServer serves our key on --listen until stop is called, and returns the address it
// bound. It binds before returning, so a bad address fails at once rather than in the
// background.
func (o *identityOptions) keyServer(key *mfed.SigningKey, version string) (addr string, stop func(), err error) {
	if o.listen == "" {
		return "", func() {}, nil
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return "", nil, fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	srv := &http.Server{
		Handler:           federation.NewKeyServer(o.serverName, key, version),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() {
		if o.tlsCert != "" {
			errc <- srv.ServeTLS(ln, o.tlsCert, o.tlsKey)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	// A bad certificate makes ServeTLS return at once: give it a moment to say so.
	select {
	case err := <-errc:
		return "", nil, fmt.Errorf("serve key on %s: %w", o.listen, err)
	case <-time.After(50 * time.Millisecond):
	}
	return ln.Addr().String(), func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}, nil
}
