package resolver

import (
	"bytes"
	"context"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/store"
)

// The PDUs of the fuzz are checked against a fixed key set: the fixture's origins, whose keys
// OriginKey derives from their names, valid until fuzzKeyValidUntil. Any other server's key
// cannot be fetched, and another key ID of a known server is unknown to it.
var (
	fuzzOrigins       = fixturepeer.DefaultOrigins
	fuzzKeyValidUntil = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	errFuzzNoServer   = errors.New("no such server in the fuzz key set")
)

func fuzzKeys(_ context.Context, server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	key, until, err := fuzzGetKey(server, keyID, time.Time{})
	return key, until, err
}

// fuzzGetKey is fuzzKeys in mautrix's shape, for checking what VerifyPDU accepted with
// mautrix alone.
func fuzzGetKey(server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	if !slices.Contains(fuzzOrigins, server) {
		return "", time.Time{}, errFuzzNoServer
	}
	key := fixturepeer.OriginKey(server)
	if key.ID != keyID {
		return "", time.Time{}, nil
	}
	return key.Pub, fuzzKeyValidUntil, nil
}

// FuzzVerifyPDU feeds arbitrary bytes to VerifyPDU as a PDU of any room version (every one
// the resolver supports is seeded, with real signed events) and checks that it never panics,
// that every refusal says why, and that whatever it accepts verifies with mautrix directly:
// the event ID recomputed for the version (or carried and signed, in versions 1 and 2), the
// signatures of the servers the version requires, the content hash unless the event is kept
// redacted, and the room. What it stores verifies again to the very same event.
func FuzzVerifyPDU(f *testing.F) {
	for _, seed := range verifySeeds(f) {
		f.Add(seed.version, seed.roomID, seed.raw)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, version, roomID string, raw []byte) {
		ev, rej := VerifyPDU(ctx, roomID, version, raw, fuzzKeys)
		if rej != nil {
			if rej.Reason == "" || rej.Err == nil || rej.Error() == "" {
				t.Fatalf("refusal without a reason: %#v", rej)
			}
			return
		}
		checkAccepted(t, version, roomID, raw, ev)

		// The store keeps ev.Raw, and serving, exporting and re-importing verify it again.
		again, rej := VerifyPDU(ctx, roomID, version, ev.Raw, fuzzKeys)
		if rej != nil {
			t.Fatalf("the stored form of %s does not verify: %v", ev.ID, rej)
		}
		if again.ID != ev.ID || !bytes.Equal(again.Raw, ev.Raw) || again.Redacted != ev.Redacted {
			t.Fatalf("the stored form verifies to another event:\n%s %t %s\n%s %t %s", ev.ID, ev.Redacted, ev.Raw, again.ID, again.Redacted, again.Raw)
		}
	})
}

// checkAccepted checks an event VerifyPDU accepted with mautrix alone, from the bytes stored
// and from the bytes received.
func checkAccepted(t *testing.T, version, roomID string, raw []byte, ev store.Event) {
	t.Helper()
	v := id.RoomVersion(version)
	if !slices.Contains(supportedRoomVersions, version) {
		t.Fatalf("accepted an event of room version %q", version)
	}
	if ev.RoomID != roomID {
		t.Fatalf("stored in room %q, verified for %q", ev.RoomID, roomID)
	}
	canonical := bytes.Clone(ev.Raw)
	if err := canonicaljson.Canonicalize((*jsontext.Value)(&canonical)); err != nil || !bytes.Equal(canonical, ev.Raw) {
		t.Fatalf("stored JSON is not canonical (%v): %s", err, ev.Raw)
	}
	if jsontext.Value(ev.Raw).Kind() != '{' || hasTopLevel(ev.Raw, "unsigned") {
		t.Fatalf("stored JSON keeps unsigned or is no object: %s", ev.Raw)
	}
	if v.EventIDFormat() == id.EventIDFormatCustom {
		checkAcceptedV1(t, v, roomID, ev)
		return
	}
	var stored, received pdu.PDU
	if err := jsonv2.Unmarshal(ev.Raw, &stored); err != nil {
		t.Fatalf("stored JSON does not parse: %v", err)
	}
	if err := jsonv2.Unmarshal(raw, &received); err != nil {
		t.Fatalf("accepted JSON does not parse with mautrix: %v", err)
	}
	for what, p := range map[string]*pdu.PDU{"stored": &stored, "received": &received} {
		eventID, err := p.GetEventID(v)
		if err != nil || string(eventID) != ev.ID {
			t.Fatalf("%s event ID %s (%v), stored as %s", what, eventID, err, ev.ID)
		}
		if err := p.VerifySignature(v, ev.Origin, fuzzGetKey); err != nil {
			t.Fatalf("%s event %s: signature of %s: %v", what, ev.ID, ev.Origin, err)
		}
	}
	if received.VerifyContentHash() == ev.Redacted {
		t.Fatalf("content hash holds: %t, but kept redacted: %t", received.VerifyContentHash(), ev.Redacted)
	}
	if !ev.Redacted && !stored.VerifyContentHash() {
		t.Fatalf("stored event %s fails its content hash", ev.ID)
	}
	if stored.Sender.Homeserver() != ev.Origin || string(stored.Sender) != ev.Sender || stored.Type != ev.Type || stored.Depth != ev.Depth {
		t.Fatalf("stored fields differ from the event's: %+v", ev)
	}
	if stored.Type == "m.room.create" && stored.StateKey != nil && *stored.StateKey == "" && v.RoomIDIsCreateEventID() {
		if derived, err := stored.GetRoomID(); err != nil || string(derived) != roomID {
			t.Fatalf("create event of room %s derives %s (%v)", roomID, derived, err)
		}
	} else if string(stored.RoomID) != roomID {
		t.Fatalf("event of room %s stored for %s", stored.RoomID, roomID)
	}
	if !slices.Equal(ev.PrevEvents, toStrings(stored.PrevEvents)) || slices.Contains(ev.PrevEvents, ev.ID) {
		t.Fatalf("prev events %v, stored JSON says %v", ev.PrevEvents, stored.PrevEvents)
	}
	checkAuthorisingServer(t, v, &stored, ev)
}

// checkAuthorisingServer checks the second signature of a restricted join.
func checkAuthorisingServer(t *testing.T, v id.RoomVersion, p *pdu.PDU, ev store.Event) {
	t.Helper()
	if p.Type != "m.room.member" || !v.RestrictedJoins() {
		return
	}
	var content struct {
		Membership string    `json:"membership"`
		Via        id.UserID `json:"join_authorised_via_users_server"`
	}
	if jsonv2.Unmarshal(p.Content, &content) != nil || content.Membership != "join" {
		return
	}
	if via := content.Via.Homeserver(); via != "" && via != ev.Origin {
		if err := p.VerifySignature(v, via, fuzzGetKey); err != nil {
			t.Fatalf("restricted join %s: signature of the authorising %s: %v", ev.ID, via, err)
		}
	}
}

func checkAcceptedV1(t *testing.T, v id.RoomVersion, roomID string, ev store.Event) {
	t.Helper()
	var p pdu.RoomV1PDU
	if err := jsonv2.Unmarshal(ev.Raw, &p); err != nil {
		t.Fatalf("stored JSON does not parse: %v", err)
	}
	if string(p.EventID) != ev.ID || string(p.RoomID) != roomID || string(p.Sender) != ev.Sender {
		t.Fatalf("stored fields differ from the event's: %+v", ev)
	}
	_, idServer, _ := strings.Cut(ev.ID, ":")
	for _, server := range []string{ev.Origin, idServer} {
		if err := p.VerifySignature(v, server, fuzzGetKey); err != nil {
			t.Fatalf("event %s: signature of %s: %v", ev.ID, server, err)
		}
	}
	if !ev.Redacted && !p.VerifyContentHash() {
		t.Fatalf("stored event %s fails its content hash", ev.ID)
	}
}

func hasTopLevel(raw []byte, name string) bool {
	var obj map[string]jsontext.Value
	if jsonv2.Unmarshal(raw, &obj) != nil {
		return false
	}
	_, ok := obj[name]
	return ok
}

func toStrings(ids []id.EventID) []string {
	out := make([]string, len(ids))
	for i, e := range ids {
		out[i] = string(e)
	}
	return out
}

// The seeds reach what the fuzz checks: in every supported room version, an event that
// verifies whole, one kept redacted, and refusals for a key that is unknown or unavailable.
func TestVerifySeedsReachEveryOutcome(t *testing.T) {
	ctx := context.Background()
	got := map[string]map[string]bool{}
	for _, seed := range verifySeeds(t) {
		outcome := "whole"
		ev, rej := VerifyPDU(ctx, seed.roomID, seed.version, seed.raw, fuzzKeys)
		switch {
		case rej != nil:
			outcome = string(rej.Reason)
		case ev.Redacted:
			outcome = "redacted"
		}
		if got[seed.version] == nil {
			got[seed.version] = map[string]bool{}
		}
		got[seed.version][outcome] = true
	}
	for _, version := range supportedRoomVersions {
		want := []string{"whole", "redacted"}
		if id.RoomVersion(version).EventIDFormat() != id.EventIDFormatCustom {
			want = append(want, string(RejectBadSignature), string(RejectKeyUnavailable))
		}
		for _, outcome := range want {
			if !got[version][outcome] {
				t.Errorf("room version %s: no seed is %s (got %v)", version, outcome, got[version])
			}
		}
	}
}
