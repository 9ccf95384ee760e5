package controllers

import (
	"errors"
	"fmt"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
)

// validateSpec applies the shared field rules of api/v1alpha1 (rules.go) to a spec: the API
// server checks them too, but a RoomSync admitted before a rule existed, or under an older
// CRD, reaches the controller unchecked. Every problem is reported, not only the first, so a
// user fixes the spec in one edit.
func validateSpec(spec *roomsyncv1alpha1.RoomSyncSpec) error {
	var errs []error
	for i, room := range spec.Rooms {
		if err := roomsyncv1alpha1.ValidateRoomID(room.ID); err != nil {
			errs = append(errs, fmt.Errorf("spec.rooms[%d].id: %w", i, err))
		}
	}
	for i, peer := range spec.Peers {
		if err := roomsyncv1alpha1.ValidateServerName(peer.ServerName); err != nil {
			errs = append(errs, fmt.Errorf("spec.peers[%d].serverName: %w", i, err))
		}
		if peer.URL == "" {
			continue
		}
		if err := roomsyncv1alpha1.ValidatePeerURL(peer.URL); err != nil {
			errs = append(errs, fmt.Errorf("spec.peers[%d].url %q (peer %s): %w", i, peer.URL, peer.ServerName, err))
		}
		if err := roomsyncv1alpha1.ValidatePeerTLS(peer.URL, peer.InsecureSkipTLSVerify); err != nil {
			errs = append(errs, fmt.Errorf("spec.peers[%d] (peer %s): %w", i, peer.ServerName, err))
		}
	}
	return errors.Join(errs...)
}
