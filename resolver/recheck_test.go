package resolver

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/store"
)

// TestRecheckEvent: stored events verify again as sound; a row whose JSON, ID, columns or
// redacted flag changed since is told apart, as is one whose key is not at hand.
func TestRecheckEvent(t *testing.T) {
	for _, version := range []id.RoomVersion{id.RoomV1, id.RoomV11} {
		t.Run(string(version), func(t *testing.T) {
			room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 3, Events: 30, Version: version, BodySize: 64})
			ctx := context.Background()
			var message store.Event
			for _, e := range room.Events {
				ev, rej := VerifyPDU(ctx, string(room.ID), string(version), e.JSON, fuzzKeys)
				if rej != nil {
					t.Fatal(rej)
				}
				if r := RecheckEvent(ctx, string(version), ev, fuzzKeys); r.Verdict != EventSound {
					t.Fatalf("event %d: %+v", e.Index, r)
				}
				if e.Type == "m.room.message" {
					message = ev
				}
			}
			flipped := message
			flipped.Raw = bytes.Replace(message.Raw, []byte(`"body":"`), []byte(`"body":"X`), 1)
			depth := message
			depth.Depth++
			renamed := message
			renamed.ID = "$another:example.org"
			misflagged := message
			misflagged.Redacted = true
			for _, c := range []struct {
				name    string
				ev      store.Event
				keys    KeyFunc
				verdict RecheckVerdict
				detail  string
			}{
				{"content changed", flipped, fuzzKeys, EventCorrupt, "content hash"},
				{"depth column changed", depth, fuzzKeys, EventCorrupt, "depth"},
				{"ID changed", renamed, fuzzKeys, EventCorrupt, "not $another:example.org"},
				{"flagged redacted", misflagged, fuzzKeys, EventMisflagged, "flagged redacted"},
				{"no key", message, noKeys, EventUnverifiable, "key"},
				{"no key, content changed", flipped, noKeys, EventCorrupt, "content hash"},
				{"no key, ID changed", renamed, noKeys, EventCorrupt, "not $another:example.org"},
			} {
				r := RecheckEvent(ctx, string(version), c.ev, c.keys)
				if r.Verdict != c.verdict || !strings.Contains(r.Detail, c.detail) {
					t.Errorf("%s: %+v, want %s saying %q", c.name, r, c.verdict, c.detail)
				}
			}
			// What was stored redacted (content stripped by a peer) is sound as such.
			redacted, rej := VerifyPDU(ctx, string(room.ID), string(version), flipped.Raw, fuzzKeys)
			if rej != nil || !redacted.Redacted {
				t.Fatalf("the flipped copy: %+v, %v", redacted, rej)
			}
			if r := RecheckEvent(ctx, string(version), redacted, fuzzKeys); r.Verdict != EventSound {
				t.Errorf("a redacted copy: %+v", r)
			}
		})
	}
}

func noKeys(context.Context, string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
	return "", time.Time{}, errors.New("no keys here")
}

// TestStoredKeys gives the keys the store keeps, and ErrKeyNotStored for others.
func TestStoredKeys(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	origin := fixturepeer.DefaultOrigins[0]
	key := fixturepeer.OriginKey(origin)
	until := time.UnixMilli(time.Now().Add(time.Hour).UnixMilli())
	if err := st.SaveServerKeys(ctx, []store.ServerKey{{ServerName: origin, KeyID: string(key.ID), Key: string(key.Pub), ValidUntil: until}}); err != nil {
		t.Fatal(err)
	}
	keys := StoredKeys(st)
	if got, gotUntil, err := keys(ctx, origin, key.ID, time.Time{}); err != nil || got != key.Pub || !gotUntil.Equal(until) {
		t.Errorf("a kept key: %q, %v, %v", got, gotUntil, err)
	}
	for _, c := range []struct {
		server string
		keyID  id.KeyID
	}{{origin, "ed25519:other"}, {"elsewhere.test", key.ID}} {
		if _, _, err := keys(ctx, c.server, c.keyID, time.Time{}); !errors.Is(err, ErrKeyNotStored) {
			t.Errorf("%s of %s: %v, want ErrKeyNotStored", c.keyID, c.server, err)
		}
	}
}
