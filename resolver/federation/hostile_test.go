package federation

import (
	"context"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

// hostileHeapBound is the most the heap may grow while a hostile answer is refused. Decoded
// whole, the answers below took from hundreds of MiB to gigabytes; refused as they stream,
// they cost a few hundred KiB plus whatever garbage the collector has not yet freed.
const hostileHeapBound = 64 << 20

// newFixtureClient starts a fixture peer for room and a client routed to it.
func newFixtureClient(t *testing.T, room *fixturepeer.Room) (*fixturepeer.Peer, *Client) {
	t.Helper()
	p := fixturepeer.Start(t, room)
	ep, err := ParseEndpoint(p.URL(), true)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(Options{
		ServerName: "us.example", Key: mfed.GenerateSigningKey(),
		Endpoints: map[string]Endpoint{p.ServerName(): ep}, RequestTimeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return p, c
}

func TestHostileAnswersAreRefusedInBoundedMemory(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 21, Events: 20, Linear: true})
	p, c := newFixtureClient(t, room)
	head := string(room.Heads()[0])
	roomID := string(room.ID)
	backfill := func(ctx context.Context) error {
		_, err := c.Backfill(ctx, p.ServerName(), roomID, []string{head}, 100)
		return err
	}
	gme := func(ctx context.Context) error {
		_, err := c.MissingEvents(ctx, p.ServerName(), roomID, nil, []string{head}, 50, 0)
		return err
	}
	event := func(ctx context.Context) error {
		_, err := c.Event(ctx, p.ServerName(), head)
		return err
	}
	makeJoin := func(ctx context.Context) error {
		_, _, err := c.JoinTemplate(ctx, p.ServerName(), roomID, "@roomsync:us.example", []string{string(room.Version)})
		return err
	}
	many := func(ep fixturepeer.Endpoint, n int) fixturepeer.Fault {
		return fixturepeer.Fault{Kind: fixturepeer.FaultManyPDUs, Endpoint: ep, Count: n}
	}
	huge := func(ep fixturepeer.Endpoint, size int64) fixturepeer.Fault {
		return fixturepeer.Fault{Kind: fixturepeer.FaultHugePDU, Endpoint: ep, Size: size}
	}
	// The sizes reported against the code that decoded answers whole: 20 million PDUs (60
	// MiB) to /backfill took 8 GB, /event 3 GB; 2.5 million prev_events 777 MB.
	cases := []struct {
		name  string
		fault fixturepeer.Fault
		call  func(context.Context) error
	}{
		{"backfill of 20 million PDUs", many(fixturepeer.EndpointBackfill, 20_000_000), backfill},
		{"get_missing_events of 20 million PDUs", many(fixturepeer.EndpointMissingEvents, 20_000_000), gme},
		{"event of 20 million PDUs", many(fixturepeer.EndpointEvent, 20_000_000), event},
		{"make_join of 2.5 million prev_events", many(fixturepeer.EndpointMakeJoin, 2_500_000), makeJoin},
		{"backfill of a PDU one byte too long", huge(fixturepeer.EndpointBackfill, 0), backfill},
		{"backfill of a 60 MiB PDU", huge(fixturepeer.EndpointBackfill, 60<<20), backfill},
		{"event of a 60 MiB PDU", huge(fixturepeer.EndpointEvent, 60<<20), event},
		{"make_join of a 60 MiB template", huge(fixturepeer.EndpointMakeJoin, 60<<20), makeJoin},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p.SetFaults(tc.fault)
			defer p.ClearFaults()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var err error
			growth := fixturepeer.PeakHeapGrowth(func() { err = tc.call(ctx) })
			t.Logf("peak heap growth %d KiB: %v", growth>>10, err)
			if outcome, _ := Classify(err); outcome != OutcomeBadResponse {
				t.Errorf("Classify(%v) = %s, want %s", err, outcome, OutcomeBadResponse)
			}
			if growth > hostileHeapBound {
				t.Errorf("heap grew by %d MiB refusing a hostile answer, want under %d MiB", growth>>20, hostileHeapBound>>20)
			}
		})
	}
}

func TestBackfillCountsTheRepeatedEvents(t *testing.T) {
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 22, Events: 20, Linear: true})
	p, c := newFixtureClient(t, room)
	from := []string{string(room.Heads()[0]), string(room.Events[10].ID)}
	for _, tc := range []struct {
		count int
		want  Outcome
	}{
		{10 + len(from), OutcomeOK},
		{10 + len(from) + 1, OutcomeBadResponse},
	} {
		p.SetFaults(fixturepeer.Fault{Kind: fixturepeer.FaultManyPDUs, Endpoint: fixturepeer.EndpointBackfill, Count: tc.count})
		pdus, err := c.Backfill(context.Background(), p.ServerName(), string(room.ID), from, 10)
		if got, _ := Classify(err); got != tc.want {
			t.Errorf("%d PDUs for limit 10 and %d v events: %d PDUs, %v (%s), want %s", tc.count, len(from), len(pdus), err, got, tc.want)
		}
	}
}
