package resolver

import (
	"context"
	"encoding/json/v2"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/store"
)

// supportedRoomVersions are the room versions whose events VerifyPDU can check, as offered
// to peers in make_join.
var supportedRoomVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// RejectReason says why a PDU was not stored. Rejections are counted by reason.
type RejectReason string

const (
	RejectMalformed        RejectReason = "malformed"          // not a PDU
	RejectWrongRoom        RejectReason = "wrong_room"         // another room's event
	RejectEventIDMismatch  RejectReason = "event_id_mismatch"  // not the event that was asked for
	RejectBadSignature     RejectReason = "bad_signature"      // a signature is missing or wrong
	RejectKeyUnavailable   RejectReason = "key_unavailable"    // the origin's key could not be fetched
	RejectUnsupportedRoom  RejectReason = "unsupported_room"   // a room version we cannot verify
	RejectInconsistentSelf RejectReason = "inconsistent_event" // fields that contradict each other
)

// Rejection is a PDU that failed verification.
type Rejection struct {
	Reason  RejectReason
	EventID string // as computed, when it could be
	// Server is the server whose key was missing or whose signature failed.
	Server string
	Err    error
}

func (r *Rejection) Error() string {
	if r.EventID != "" {
		return fmt.Sprintf("event %s rejected (%s): %v", r.EventID, r.Reason, r.Err)
	}
	return fmt.Sprintf("event rejected (%s): %v", r.Reason, r.Err)
}

func (r *Rejection) Unwrap() error { return r.Err }

func reject(reason RejectReason, eventID string, format string, args ...any) *Rejection {
	return &Rejection{Reason: reason, EventID: eventID, Err: fmt.Errorf(format, args...)}
}

// KeyFunc returns a server's verify key and until when it is valid (federation.KeyRing.Key).
type KeyFunc func(ctx context.Context, server string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error)

// errKeyFetch marks a key that could not be fetched, as opposed to a signature that is wrong.
var errKeyFetch = errors.New("key fetch failed")

// VerifyPDU checks one PDU of roomID, a room of roomVersion, and returns it as a store event:
// the room ID, the event ID recomputed for the room version, the signature of the sender's
// server (and of the server that authorised a restricted join), and the content hash. A PDU
// whose content hash fails but whose signature holds is returned in its redacted form with
// Redacted set: that is how servers serve content the requester may not see. The `unsigned`
// section, which no signature covers and each server fills its own way, is not kept.
func VerifyPDU(ctx context.Context, roomID, roomVersion string, raw []byte, keys KeyFunc) (store.Event, *Rejection) {
	version := id.RoomVersion(roomVersion)
	if !version.IsKnown() {
		return store.Event{}, reject(RejectUnsupportedRoom, "", "room version %q is unknown", roomVersion)
	}
	if version.EventIDFormat() == id.EventIDFormatCustom {
		return verifyV1PDU(ctx, roomID, version, raw, keys)
	}

	var p pdu.PDU
	if err := json.Unmarshal(raw, &p); err != nil {
		return store.Event{}, reject(RejectMalformed, "", "parse PDU: %w", err)
	}
	if p.Type == "" || p.Sender == "" || p.Depth < 0 {
		return store.Event{}, reject(RejectMalformed, "", "PDU lacks type or sender, or has a negative depth")
	}
	eventID, err := p.GetEventID(version)
	if err != nil {
		return store.Event{}, reject(RejectMalformed, "", "compute event ID: %w", err)
	}
	evID := string(eventID)

	// Room ID: version 12 create events have none, their room ID is their own hash.
	if p.Type == "m.room.create" && p.StateKey != nil && *p.StateKey == "" && version.RoomIDIsCreateEventID() {
		derived, err := p.GetRoomID()
		if err != nil || string(derived) != roomID {
			return store.Event{}, reject(RejectWrongRoom, evID, "create event derives room ID %q, want %q (%v)", derived, roomID, err)
		}
	} else if string(p.RoomID) != roomID {
		return store.Event{}, reject(RejectWrongRoom, evID, "event of room %q, want %q", p.RoomID, roomID)
	}

	senderServer := p.Sender.Homeserver()
	if senderServer == "" {
		return store.Event{}, reject(RejectMalformed, evID, "sender %q has no server name", p.Sender)
	}
	servers := []string{senderServer}
	if p.Type == "m.room.member" && version.RestrictedJoins() {
		if via := gjson.GetBytes(p.Content, "join_authorised_via_users_server"); via.Exists() && gjson.GetBytes(p.Content, "membership").Str == "join" {
			if server := id.UserID(via.Str).Homeserver(); server != "" && server != senderServer {
				servers = append(servers, server)
			}
		}
	}
	if r := verifySignatures(ctx, evID, servers, keys, func(server string, getKey pdu.GetKeyFunc) error {
		return p.VerifySignature(version, server, getKey)
	}); r != nil {
		return store.Event{}, r
	}

	redacted := !p.VerifyContentHash()
	if redacted {
		// The signature covers the redacted form, which verified: keep that form.
		p.Redact(version)
	}
	p.Unsigned = nil
	prevs := make([]string, len(p.PrevEvents))
	for i, prev := range p.PrevEvents {
		prevs[i] = string(prev)
	}
	return storedEvent(store.Event{
		ID: evID, RoomID: roomID, Depth: p.Depth, OriginServerTS: p.OriginServerTS, Type: p.Type,
		StateKey: p.StateKey, Sender: string(p.Sender), Origin: senderServer, PrevEvents: prevs,
		Redacted: redacted,
	}, &p)
}

// storedEvent completes the store's copy of a PDU that verified: its canonical JSON as kept
// (verified is the PDU, already redacted if it had to be, and stripped of unsigned). An event that lists
// itself as a prev is refused.
func storedEvent(ev store.Event, verified any) (store.Event, *Rejection) {
	if slices.Contains(ev.PrevEvents, ev.ID) {
		return store.Event{}, reject(RejectInconsistentSelf, ev.ID, "event lists itself as a prev event")
	}
	canonical, err := canonicaljson.Marshal(verified)
	if err != nil {
		return store.Event{}, reject(RejectMalformed, ev.ID, "re-encode PDU: %w", err)
	}
	ev.Raw = canonical
	return ev, nil
}

// verifySignatures checks each server's signature with verify, telling a key that could not be
// fetched (retried later) from a signature that is wrong (a lie).
func verifySignatures(ctx context.Context, evID string, servers []string, keys KeyFunc, verify func(string, pdu.GetKeyFunc) error) *Rejection {
	for _, server := range servers {
		getKey := func(serverName string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
			key, until, err := keys(ctx, serverName, keyID, minValidUntil)
			if err != nil {
				return "", time.Time{}, fmt.Errorf("%w: %w", errKeyFetch, err)
			}
			return key, until, nil
		}
		if err := verify(server, getKey); err != nil {
			reason := RejectBadSignature
			if errors.Is(err, errKeyFetch) {
				reason = RejectKeyUnavailable
			}
			rej := reject(reason, evID, "verify signature of %s: %w", server, err)
			rej.Server = server
			return rej
		}
	}
	return nil
}

// verifyV1PDU checks a PDU of room version 1 or 2, which carries its event ID: the ID is
// covered by the signatures, which the room version requires from the sender's server and
// from the server that minted the ID.
func verifyV1PDU(ctx context.Context, roomID string, version id.RoomVersion, raw []byte, keys KeyFunc) (store.Event, *Rejection) {
	var p pdu.RoomV1PDU
	if err := json.Unmarshal(raw, &p); err != nil {
		return store.Event{}, reject(RejectMalformed, "", "parse PDU: %w", err)
	}
	evID := string(p.EventID)
	_, idServer, ok := strings.Cut(evID, ":")
	if !strings.HasPrefix(evID, "$") || !ok || idServer == "" {
		return store.Event{}, reject(RejectMalformed, evID, "event ID %q is not $opaque:server", evID)
	}
	if p.Type == "" || p.Sender == "" || p.Depth < 0 {
		return store.Event{}, reject(RejectMalformed, evID, "PDU lacks type or sender, or has a negative depth")
	}
	if string(p.RoomID) != roomID {
		return store.Event{}, reject(RejectWrongRoom, evID, "event of room %q, want %q", p.RoomID, roomID)
	}
	senderServer := p.Sender.Homeserver()
	if senderServer == "" {
		return store.Event{}, reject(RejectMalformed, evID, "sender %q has no server name", p.Sender)
	}
	servers := []string{senderServer}
	if idServer != senderServer {
		servers = append(servers, idServer)
	}
	if r := verifySignatures(ctx, evID, servers, keys, func(server string, getKey pdu.GetKeyFunc) error {
		return p.VerifySignature(version, server, getKey)
	}); r != nil {
		return store.Event{}, r
	}
	redacted := !p.VerifyContentHash()
	if redacted {
		p.Redact(version)
	}
	p.Unsigned = nil
	prevs := make([]string, len(p.PrevEvents))
	for i, prev := range p.PrevEvents {
		prevs[i] = string(prev.ID)
	}
	return storedEvent(store.Event{
		ID: evID, RoomID: roomID, Depth: p.Depth, OriginServerTS: p.OriginServerTS, Type: p.Type,
		StateKey: p.StateKey, Sender: string(p.Sender), Origin: senderServer, PrevEvents: prevs,
		Redacted: redacted,
	}, &p)
}
