package resolver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json/v2"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/resolver/federation"
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
	// Not version.IsKnown(): mautrix knows "" too (its RoomV0, read as version 1), which is no
	// room version a room can have; a create event without one is of version "1".
	if !slices.Contains(supportedRoomVersions, roomVersion) {
		return store.Event{}, reject(RejectUnsupportedRoom, "", "room version %q is unknown", roomVersion)
	}
	if version.EventIDFormat() == id.EventIDFormatCustom {
		return verifyV1PDU(ctx, roomID, version, raw, keys)
	}

	return verifyParsed(ctx, roomID, version, parsePDU(raw, version), keys)
}

// parsedPDU is a PDU of a room version whose event IDs are hashes (3 and later), parsed and
// encoded: its event ID, and what verification checks, or why it has no ID (rej).
type parsedPDU struct {
	p      pdu.PDU
	forms  pduForms
	fast   bool   // forms holds the encodings, else signed alone is mautrix's
	signed []byte // the redacted PDU without signatures
	id     string
	rej    *Rejection
}

// release returns the encodings' scratch buffer (see pduForms.release).
func (pp *parsedPDU) release() { pp.forms.release() }

// parsePDU parses and encodes raw once, for its event ID and its verification: a pull needs
// the IDs of a page's events to ask for the page below before the page is verified.
func parsePDU(raw []byte, version id.RoomVersion) *parsedPDU {
	pp := &parsedPDU{}
	p := &pp.p
	if err := json.Unmarshal(raw, p); err != nil {
		pp.rej = reject(RejectMalformed, "", "parse PDU: %w", err)
		return pp
	}
	if p.Type == "" || p.Sender == "" || p.Depth < 0 {
		pp.rej = reject(RejectMalformed, "", "PDU lacks type or sender, or has a negative depth")
		return pp
	}
	if p.Hashes == nil {
		// As mautrix computes the event ID: a PDU without hashes gets its content hash filled
		// in, which the signatures then cover (and which holds).
		if err := p.FillContentHash(); err != nil {
			pp.rej = reject(RejectMalformed, "", "compute event ID: %w", err)
			return pp
		}
	}
	// No signature covers unsigned and the store does not keep it.
	p.Unsigned = nil
	pp.forms, pp.fast = encodePDU(p, p.Type, p.Content, version, false)
	pp.signed = pp.forms.signed
	if !pp.fast {
		var err error
		if pp.signed, err = canonicaljson.Marshal(p.Clone().RedactForSignature(version)); err != nil {
			pp.rej = reject(RejectMalformed, "", "compute event ID: %w", err)
			return pp
		}
	}
	var err error
	if pp.id, err = eventIDOf(version, pp.signed); err != nil {
		pp.rej = reject(RejectMalformed, "", "compute event ID: %w", err)
	}
	return pp
}

// verifyParsed is VerifyPDU of a PDU parsePDU made; it releases the PDU's buffers.
func verifyParsed(ctx context.Context, roomID string, version id.RoomVersion, pp *parsedPDU, keys KeyFunc) (store.Event, *Rejection) {
	defer pp.release()
	if pp.rej != nil {
		return store.Event{}, pp.rej
	}
	p, forms, fast, signed, evID := &pp.p, &pp.forms, pp.fast, pp.signed, pp.id

	// Room ID: version 12 create events have none, their room ID is their own hash.
	if p.Type == "m.room.create" && p.StateKey != nil && *p.StateKey == "" && version.RoomIDIsCreateEventID() {
		var derived id.RoomID
		var err error
		if gjson.GetBytes(p.Content, "room_version").Str == string(version) {
			// The reference hash under the room's version, which is the create event's.
			derived = id.RoomID("!" + evID[1:])
		} else {
			derived, err = p.GetRoomID()
		}
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
		return verifySignature(version, p.Signatures[server], server, p.OriginServerTS, signed, getKey)
	}); r != nil {
		return store.Event{}, r
	}

	var redacted bool
	if fast {
		redacted = p.Hashes.SHA256 == nil || !hmac.Equal(forms.contentHash[:], p.Hashes.SHA256)
	} else {
		redacted = !p.VerifyContentHash()
	}
	prevs := make([]string, len(p.PrevEvents))
	for i, prev := range p.PrevEvents {
		prevs[i] = string(prev)
	}
	ev := store.Event{
		ID: evID, RoomID: roomID, Depth: p.Depth, OriginServerTS: p.OriginServerTS, Type: p.Type,
		StateKey: p.StateKey, Sender: string(p.Sender), Origin: senderServer, PrevEvents: prevs,
		Redacted: redacted,
	}
	if redacted {
		// The signature covers the redacted form, which verified: keep that form.
		p.Redact(version)
		p.Unsigned = nil
		return storedEvent(ev, nil, p)
	}
	return storedEvent(ev, forms.full, p)
}

// eventIDOf is the event ID whose reference hash is that of signed (the redacted PDU without
// signatures), as version encodes it. A version 12 room ID is the same with '!'.
func eventIDOf(version id.RoomVersion, signed []byte) (string, error) {
	hash := sha256.Sum256(signed)
	var enc *base64.Encoding
	switch version.EventIDFormat() {
	case id.EventIDFormatBase64:
		enc = base64.RawStdEncoding
	case id.EventIDFormatURLSafeBase64:
		enc = base64.RawURLEncoding
	default:
		return "", fmt.Errorf("unknown event ID format %v", version.EventIDFormat())
	}
	out := make([]byte, 1+enc.EncodedLen(len(hash)))
	out[0] = '$'
	enc.Encode(out[1:], hash[:])
	return string(out), nil
}

// verifySignature is mautrix's PDU.VerifySignature over signed, the redacted form already
// encoded: one of server's signatures must verify and none may fail; a key that is not
// found, or (where the room version says so) expired before the event, verifies nothing.
func verifySignature(version id.RoomVersion, sigs map[id.KeyID]string, server string, ts int64, signed []byte, getKey pdu.GetKeyFunc) error {
	if len(sigs) == 0 {
		return fmt.Errorf("no signatures found for server %s", server)
	}
	originServerTS := time.UnixMilli(ts)
	verified := false
	var errorList []error
	for keyID, sig := range sigs {
		key, validUntil, err := getKey(server, keyID, originServerTS)
		if err != nil {
			return fmt.Errorf("failed to get key %s for %s: %w", keyID, server, err)
		} else if key == "" {
			errorList = append(errorList, fmt.Errorf("key %s not found for %s", keyID, server))
		} else if validUntil.Before(originServerTS) && version.EnforceSigningKeyValidity() {
			errorList = append(errorList, fmt.Errorf("key %s for %s is only valid until %s, but event is from %s", keyID, server, validUntil, originServerTS))
		} else if err = federation.CheckVerifyKey(key); err != nil {
			errorList = append(errorList, fmt.Errorf("key %s for %s: %w", keyID, server, err))
		} else if err = signutil.VerifyJSONCanonical(key, sig, signed); err != nil {
			return fmt.Errorf("failed to verify signature from key %s: %w", keyID, err)
		} else {
			verified = true
		}
	}
	if !verified {
		return fmt.Errorf("no verifiable signatures found for server %s: %w", server, errors.Join(errorList...))
	}
	return nil
}

// verifyV1Signature is mautrix's RoomV1PDU.VerifySignature over signed: every signature of
// server must verify, with a key that is found, and there must be one.
func verifyV1Signature(sigs map[id.KeyID]string, server string, ts int64, signed []byte, getKey pdu.GetKeyFunc) error {
	verified := false
	for keyID, sig := range sigs {
		originServerTS := time.UnixMilli(ts)
		key, _, err := getKey(server, keyID, originServerTS)
		if err != nil {
			return fmt.Errorf("failed to get key %s for %s: %w", keyID, server, err)
		} else if key == "" {
			return fmt.Errorf("key %s not found for %s", keyID, server)
		} else if err = federation.CheckVerifyKey(key); err != nil {
			return fmt.Errorf("key %s for %s: %w", keyID, server, err)
		} else if err = signutil.VerifyJSONCanonical(key, sig, signed); err != nil {
			return fmt.Errorf("failed to verify signature from key %s: %w", keyID, err)
		}
		verified = true
	}
	if !verified {
		return fmt.Errorf("no verifiable signatures found for server %s", server)
	}
	return nil
}

// storedEvent completes the store's copy of a PDU that verified: its canonical JSON as kept,
// canonical if it was encoded already, else verified's (verified is the PDU, already redacted
// if it had to be, and stripped of unsigned). An event that lists itself as a prev is refused.
func storedEvent(ev store.Event, canonical []byte, verified any) (store.Event, *Rejection) {
	if slices.Contains(ev.PrevEvents, ev.ID) {
		return store.Event{}, reject(RejectInconsistentSelf, ev.ID, "event lists itself as a prev event")
	}
	if canonical == nil {
		var err error
		if canonical, err = canonicaljson.Marshal(verified); err != nil {
			return store.Event{}, reject(RejectMalformed, ev.ID, "re-encode PDU: %w", err)
		}
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
	p.Unsigned = nil
	forms, fast := encodePDU(&p, p.Type, p.Content, version, true)
	defer forms.release()
	signed := forms.signed
	// What mautrix's VerifySignature would fail on before any key, for each server.
	var signErr error
	if !p.SupportsRoomVersion(version) {
		signErr = fmt.Errorf("RoomV1PDU.VerifySignature: unsupported room version %s", version)
	} else if !fast {
		var err error
		if signed, err = canonicaljson.Marshal(p.Clone().RedactForSignature(version)); err != nil {
			signErr = fmt.Errorf("failed to marshal redacted PDU to verify signature: %w", err)
		}
	}
	if r := verifySignatures(ctx, evID, servers, keys, func(server string, getKey pdu.GetKeyFunc) error {
		if signErr != nil {
			return signErr
		}
		return verifyV1Signature(p.Signatures[server], server, p.OriginServerTS, signed, getKey)
	}); r != nil {
		return store.Event{}, r
	}
	var redacted bool
	if fast {
		redacted = p.Hashes == nil || !hmac.Equal(forms.contentHash[:], p.Hashes.SHA256)
	} else {
		redacted = !p.VerifyContentHash()
	}
	prevs := make([]string, len(p.PrevEvents))
	for i, prev := range p.PrevEvents {
		prevs[i] = string(prev.ID)
	}
	ev := store.Event{
		ID: evID, RoomID: roomID, Depth: p.Depth, OriginServerTS: p.OriginServerTS, Type: p.Type,
		StateKey: p.StateKey, Sender: string(p.Sender), Origin: senderServer, PrevEvents: prevs,
		Redacted: redacted,
	}
	if redacted {
		p.Redact(version)
		p.Unsigned = nil
		return storedEvent(ev, nil, &p)
	}
	return storedEvent(ev, forms.full, &p)
}
