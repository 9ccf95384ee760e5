package controllers

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
)

// validateSpec checks what the CRD schema cannot: that peer URLs parse into something the
// federation client can dial. Every problem is reported, not only the first, so a user fixes
// the spec in one edit.
func validateSpec(spec *roomsyncv1alpha1.RoomSyncSpec) error {
	var errs []error
	for i, peer := range spec.Peers {
		if peer.URL == "" {
			continue
		}
		if err := validatePeerURL(peer.URL); err != nil {
			errs = append(errs, fmt.Errorf("spec.peers[%d].url %q (peer %s): %w", i, peer.URL, peer.ServerName, err))
		}
	}
	return errors.Join(errs...)
}

// validatePeerURL accepts an absolute http(s) URL with a host, an optional numeric port, and
// no query, fragment or credentials: the federation client appends /_matrix/... paths to it.
func validatePeerURL(raw string) error {
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
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("scheme must be https or http, not %q", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return errors.New("has no host")
	case u.User != nil:
		return errors.New("must not carry credentials")
	case u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(raw, "?") || strings.HasSuffix(raw, "#"):
		return errors.New("must not have a query or fragment")
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q is out of range", port)
		}
	}
	return nil
}
