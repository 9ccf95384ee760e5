package fsck

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/internal/fixturesync"
	"github.com/roomsync/roomsync/internal/storetest"
	"github.com/roomsync/roomsync/store"
)

// The faults of the issue, on a 400-event room that the real resolver filled from a fixture
// peer: rows deleted behind the store's back, a row whose JSON changed, the events table
// dropped, and (SQLite) garbage written over a page of the events table.

// synced is a store holding a fixture room, converged, and the peer that served it.
type synced struct {
	url  string
	room *fixturepeer.Room
	peer *fixturepeer.Peer
}

// syncRoom fills the store at url from a fixture peer. With keep, the origins' keys are
// kept in the store, as the key ring keeps those a server gives over verified TLS; the
// fixture peers are reached without it, so the key ring keeps none of its own.
func syncRoom(t *testing.T, url string, keep bool) synced {
	t.Helper()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 14, Events: 400, JoinRate: 0.03})
	peer := fixturepeer.Start(t, room)
	st := openStore(t, url)
	if r := fixturesync.Sync(t, st, room, []*fixturepeer.Peer{peer}, 20); !r.Converged || r.Room.Events != 400 {
		t.Fatalf("the first sync: %+v", r)
	}
	if keep {
		keepOriginKeys(t, st, room)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return synced{url: url, room: room, peer: peer}
}

func keepOriginKeys(t testing.TB, st store.Store, room *fixturepeer.Room) {
	t.Helper()
	var keys []store.ServerKey
	for _, origin := range room.Origins() {
		k := fixturepeer.OriginKey(origin)
		keys = append(keys, store.ServerKey{ServerName: origin, KeyID: string(k.ID), Key: string(k.Pub),
			ValidUntil: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)})
	}
	if err := st.SaveServerKeys(context.Background(), keys); err != nil {
		t.Fatal(err)
	}
}

func openStore(t *testing.T, url string) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// execRaw runs statements on the store's database straight, as a hand or a bug would.
func execRaw(t *testing.T, url string, stmts ...string) {
	t.Helper()
	driver, dsn := "pgx", url
	if path, ok := strings.CutPrefix(url, "sqlite://"); ok {
		driver, dsn = "sqlite", path
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q[:min(len(q), 80)], err)
		}
	}
}

func check(t *testing.T, url string) *Report {
	t.Helper()
	st, err := store.OpenReadOnly(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rep, err := Check(context.Background(), st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func quoted(ids []string) string { return "'" + strings.Join(ids, "','") + "'" }

// heldIDs lists the room's events in the store.
func heldIDs(t *testing.T, st store.Store, roomID string) []string {
	t.Helper()
	var ids []string
	if err := st.StreamEvents(context.Background(), roomID, func(e store.Event) error {
		ids = append(ids, e.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

// resyncAndCompare repairs the store with rep, syncs the room again from the peer, and checks
// that the store holds exactly the room's events, consistent, every state computed, and
// that fsck finds it clean.
func resyncAndCompare(t *testing.T, s synced, rep *Report) {
	t.Helper()
	ctx := context.Background()
	st := openStore(t, s.url)
	if err := Repair(ctx, st, rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Summary.Clean || rep.Rooms[0].Repair == nil || rep.Rooms[0].Repair.GapsAdded == 0 {
		t.Fatalf("after the repair: %+v", rep.Rooms[0].Repair)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("fsck --repair:\n%s", text.String())
	roomID := string(s.room.ID)
	if r := fixturesync.Sync(t, st, s.room, []*fixturepeer.Peer{s.peer}, 20); !r.Converged {
		t.Fatalf("the sync after the repair: %+v", r)
	}
	want := make([]string, len(s.room.Events))
	for i, e := range s.room.Events {
		want[i] = string(e.ID)
	}
	slices.Sort(want)
	if got := heldIDs(t, st, roomID); !slices.Equal(got, want) {
		t.Fatalf("after the sync the store holds %d events, want the room's %d", len(got), len(want))
	}
	if err := st.CheckConsistency(ctx, roomID); err != nil {
		t.Fatal(err)
	}
	if without, err := st.EventsWithoutState(ctx, roomID, nil, 10); err != nil || len(without) > 0 {
		t.Fatalf("events without state after the sync: %d, %v", len(without), err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	again := check(t, s.url)
	if !again.Summary.Clean || again.Summary.Verified != 400 {
		t.Fatalf("fsck after the sync: %+v", again.Summary)
	}
}

// TestLostRowsAreRepairedAndRefetched: 282 of the 400 event rows deleted with raw SQL. fsck
// reports the counts; the repair rebuilds counters and extremities and makes the lost events
// gaps; a sync then fetches them back, and the room holds exactly its 400 events again.
func TestLostRowsAreRepairedAndRefetched(t *testing.T) {
	for _, b := range storetest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := syncRoom(t, b.NewURL(t), true)
			ids := make([]string, len(s.room.Events))
			for i, e := range s.room.Events {
				ids[i] = string(e.ID)
			}
			rand.New(rand.NewPCG(14, 282)).Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
			execRaw(t, s.url, "DELETE FROM events WHERE event_id IN ("+quoted(ids[:282])+")")

			rep := check(t, s.url)
			room := rep.Rooms[0]
			if rep.Summary.Clean || room.Clean || room.Events != 118 || room.Verified != 118 || len(room.BadEvents) != 0 {
				t.Fatalf("fsck: %+v", room)
			}
			if !slices.Contains(room.Problems, "event count is 400, the rows say 118") {
				t.Errorf("fsck does not report the count: %q", room.Problems)
			}
			resyncAndCompare(t, s, rep)
		})
	}
}

// TestTamperedEventIsRefetched: a byte of an event's content changed in its row. The
// re-verification finds it (the content no longer matches its hash), even without the
// origins' keys, which leave the other events unverifiable here; the repair deletes it and
// makes it a gap, and a sync fetches it again.
func TestTamperedEventIsRefetched(t *testing.T) {
	for _, b := range storetest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := syncRoom(t, b.NewURL(t), false)
			victim := s.room.Events[200]
			for victim.Type != "m.room.message" {
				victim = s.room.Events[victim.Index+1]
			}
			st := openStore(t, s.url)
			held, err := st.Events(context.Background(), []string{string(victim.ID)})
			if err != nil || held[string(victim.ID)].Redacted {
				t.Fatalf("the victim as stored: %+v, %v", held, err)
			}
			st.Close()
			raw := held[string(victim.ID)].Raw
			at := bytes.Index(raw, []byte(`"body":"`)) + len(`"body":"`)
			tampered := slices.Clone(raw)
			tampered[at] ^= 0x01 // a letter for its neighbour: still JSON
			hexRaw := "x'" + hex.EncodeToString(tampered) + "'"
			if !strings.HasPrefix(s.url, "sqlite://") {
				hexRaw = "'\\x" + hex.EncodeToString(tampered) + "'::bytea"
			}
			execRaw(t, s.url, "UPDATE events SET raw = "+hexRaw+" WHERE event_id = '"+string(victim.ID)+"'")

			for _, keep := range []bool{false, true} {
				if keep {
					keepOriginKeys(t, openStore(t, s.url), s.room)
				}
				rep := check(t, s.url)
				room := rep.Rooms[0]
				verified, unverifiable := 0, 399
				if keep {
					verified, unverifiable = 399, 0
				}
				if len(room.BadEvents) != 1 || room.BadEvents[0].EventID != string(victim.ID) || room.BadEvents[0].Verdict != "corrupt" ||
					!strings.Contains(room.BadEvents[0].Problem, "content hash") || len(room.Problems) != 0 ||
					room.Verified != verified || room.Unverifiable != unverifiable || rep.Summary.Clean {
					t.Fatalf("fsck with the keys kept %t: %+v", keep, room)
				}
				if keep {
					resyncAndCompare(t, s, rep)
				}
			}
		})
	}
}

// TestEventsTableDropped: fsck says the table is missing, checks no room, and refuses to
// repair.
func TestEventsTableDropped(t *testing.T) {
	for _, b := range storetest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			s := syncRoom(t, b.NewURL(t), true)
			execRaw(t, s.url, "DROP TABLE events")
			rep := check(t, s.url)
			if rep.Summary.Clean || !slices.Contains(rep.Database.Problems, "table events is missing") ||
				!strings.Contains(rep.BeyondRepair, "lacks the tables events") || len(rep.Rooms) != 0 {
				t.Fatalf("fsck: %+v", rep)
			}
			if err := Repair(context.Background(), openStore(t, s.url), rep); !errors.Is(err, ErrBeyondRepair) {
				t.Fatalf("Repair = %v, want ErrBeyondRepair", err)
			}
		})
	}
}

// TestDamagedPages: garbage over a page of the events table, written while the store is
// closed. quick_check finds it; fsck says it cannot repair it and what to do.
func TestDamagedPages(t *testing.T) {
	s := syncRoom(t, storetest.SQLiteURL(t), true)
	path := strings.TrimPrefix(s.url, "sqlite://")
	storetest.DamageSQLitePage(t, path, "events")
	rep := check(t, s.url)
	if rep.Summary.Clean || len(rep.Database.Problems) == 0 || !strings.Contains(rep.BeyondRepair, "damaged below its rows") ||
		!strings.Contains(rep.BeyondRepair, "backup") {
		t.Fatalf("fsck: %+v", rep)
	}
	t.Logf("quick_check: %q", rep.Database.Problems)
	if err := Repair(context.Background(), openStore(t, s.url), rep); !errors.Is(err, ErrBeyondRepair) {
		t.Fatalf("Repair = %v, want ErrBeyondRepair", err)
	}
}
