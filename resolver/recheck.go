package resolver

import (
	"context"
	"encoding/json/v2"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/store"
)

// Re-verifying stored events, for `roomsync fsck`: the row must still be what VerifyPDU
// made of the PDU when it arrived. A row changed since (a flipped bit, a hand edit) fails
// here in one of the ways VerifyPDU refuses a peer's lie, or disagrees with its own JSON.

// RecheckVerdict is what re-verifying a stored event concluded.
type RecheckVerdict string

const (
	// EventSound: the JSON verifies and the row says what the JSON says.
	EventSound RecheckVerdict = "sound"
	// EventUnverifiable: a key the signature needs is not at hand (or the room version is
	// unknown): neither sound nor corrupt here.
	EventUnverifiable RecheckVerdict = "unverifiable"
	// EventCorrupt: the JSON no longer verifies, or the row's columns or ID are not what the
	// JSON says. The row is worth nothing: fetch the event again.
	EventCorrupt RecheckVerdict = "corrupt"
	// EventMisflagged: the JSON verifies in full, but the row says it is the redacted form.
	EventMisflagged RecheckVerdict = "misflagged"
)

// Recheck is the verdict on one stored event.
type Recheck struct {
	Verdict RecheckVerdict
	// Detail says what is wrong, or whose key is missing.
	Detail string
	// Server is the server whose key is missing (EventUnverifiable).
	Server string
}

// RecheckEvent verifies a stored event of a room of roomVersion again, with the same code
// that verified it on arrival (VerifyPDU): the JSON must verify (signatures with keys from
// keys, the event ID from its hash in room versions 3 and later), and give back the row's ID,
// room, depth, timestamp, type, state key, sender, origin and prev events, and its redacted
// flag: a row flagged full whose content no longer matches its hash was changed after it was
// stored. Without the keys, the event ID and the content hash are still checked.
func RecheckEvent(ctx context.Context, roomVersion string, ev store.Event, keys KeyFunc) Recheck {
	got, rej := VerifyPDU(ctx, ev.RoomID, roomVersion, ev.Raw, keys)
	if rej != nil {
		switch {
		case rej.EventID != "" && rej.EventID != ev.ID:
			return Recheck{Verdict: EventCorrupt, Detail: fmt.Sprintf("the JSON is event %s, not %s", rej.EventID, ev.ID)}
		case rej.Reason == RejectKeyUnavailable && !ev.Redacted && !contentHashHolds(roomVersion, ev.Raw):
			// The content hash needs no key: a row kept in full must still match it.
			return Recheck{Verdict: EventCorrupt, Detail: "its content does not match its content hash: the JSON changed after it was stored"}
		case rej.Reason == RejectKeyUnavailable:
			return Recheck{Verdict: EventUnverifiable, Server: rej.Server, Detail: rej.Error()}
		case rej.Reason == RejectUnsupportedRoom:
			return Recheck{Verdict: EventUnverifiable, Detail: rej.Error()}
		}
		return Recheck{Verdict: EventCorrupt, Detail: rej.Error()}
	}
	if got.ID != ev.ID {
		return Recheck{Verdict: EventCorrupt, Detail: fmt.Sprintf("the JSON is event %s, not %s", got.ID, ev.ID)}
	}
	if diff := rowDiff(ev, got); diff != "" {
		return Recheck{Verdict: EventCorrupt, Detail: diff}
	}
	switch {
	case got.Redacted && !ev.Redacted:
		return Recheck{Verdict: EventCorrupt, Detail: "its content does not match its content hash: the JSON changed after it was stored"}
	case !got.Redacted && ev.Redacted:
		return Recheck{Verdict: EventMisflagged, Detail: "flagged redacted, but its content matches its content hash"}
	}
	return Recheck{Verdict: EventSound}
}

// contentHashHolds reports whether the PDU's content matches its content hash, as mautrix
// checks it for VerifyPDU; JSON that does not parse does not.
func contentHashHolds(roomVersion string, raw []byte) bool {
	if id.RoomVersion(roomVersion).EventIDFormat() == id.EventIDFormatCustom {
		var p pdu.RoomV1PDU
		return json.Unmarshal(raw, &p) == nil && p.VerifyContentHash()
	}
	var p pdu.PDU
	return json.Unmarshal(raw, &p) == nil && p.VerifyContentHash()
}

// rowDiff names the first column of the row that the verified JSON contradicts.
func rowDiff(row, pdu store.Event) string {
	stateKey := func(k *string) string {
		if k == nil {
			return "none"
		}
		return fmt.Sprintf("%q", *k)
	}
	for _, c := range []struct {
		column    string
		row, json any
	}{
		{"room_id", row.RoomID, pdu.RoomID},
		{"depth", row.Depth, pdu.Depth},
		{"origin_server_ts", row.OriginServerTS, pdu.OriginServerTS},
		{"type", row.Type, pdu.Type},
		{"state_key", stateKey(row.StateKey), stateKey(pdu.StateKey)},
		{"sender", row.Sender, pdu.Sender},
		{"origin", row.Origin, pdu.Origin},
		{"prev_events", fmt.Sprint(sortedSet(row.PrevEvents)), fmt.Sprint(sortedSet(pdu.PrevEvents))},
	} {
		if c.row != c.json {
			return fmt.Sprintf("the row's %s is %v, its JSON says %v", c.column, c.row, c.json)
		}
	}
	return ""
}

func sortedSet(ids []string) []string { return slices.Compact(slices.Sorted(slices.Values(ids))) }

// ErrKeyNotStored is the error of StoredKeys for a key the store does not keep.
var ErrKeyNotStored = errors.New("key not kept in the store")

// StoredKeys verifies with the server keys kept in st alone (those the key ring verified, see
// KeyStoreOf), and never fetches one: what stored events are re-verified with. A key that
// is not kept is ErrKeyNotStored, which VerifyPDU reports as unavailable. Each server's keys
// are read once.
func StoredKeys(st store.Store) KeyFunc {
	var mu sync.Mutex
	cache := map[string][]store.ServerKey{}
	return func(ctx context.Context, server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
		mu.Lock()
		keys, ok := cache[server]
		mu.Unlock()
		if !ok {
			var err error
			if keys, err = st.ServerKeys(ctx, server); err != nil {
				return "", time.Time{}, err
			}
			mu.Lock()
			cache[server] = keys
			mu.Unlock()
		}
		for _, k := range keys {
			if k.KeyID == string(keyID) {
				return id.SigningKey(k.Key), k.ValidUntil, nil
			}
		}
		return "", time.Time{}, fmt.Errorf("%s of %s: %w", keyID, server, ErrKeyNotStored)
	}
}
