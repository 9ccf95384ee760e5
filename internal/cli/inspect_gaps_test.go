package cli

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/internal/fixturesync"
	"github.com/roomsync/roomsync/store"
)

// A room whose early history only full.test holds, while full.test is down: inspect --gaps
// names full.test and its error for every gap, and what late.test answered.
func TestInspectGapsNamesThePeerThatIsDown(t *testing.T) {
	pp := fixturepeer.StartPartialPeers(t, 21)
	pp.Full.SetFaults(fixturepeer.Fault{Kind: fixturepeer.FaultDisconnect})
	storeURL := "sqlite://" + filepath.Join(t.TempDir(), "events.db")
	st, err := store.Open(t.Context(), storeURL)
	if err != nil {
		t.Fatal(err)
	}
	r := fixturesync.Sync(t, st, pp.Room, []*fixturepeer.Peer{pp.Full, pp.Late}, 5)
	_ = st.Close()
	if r.Gaps == 0 {
		t.Fatalf("%+v; want gaps with full.test down", r)
	}
	room := string(pp.Room.ID)

	out := inspect(t, ExitOK, "--store", storeURL, "--room", room, "--gaps")
	t.Logf("inspect --gaps:\n%s", out[:min(len(out), 1500)])
	gapCount := strings.Count(out, "\ngap $")
	if gapCount != r.Gaps {
		t.Errorf("%d gaps printed, the sync left %d", gapCount, r.Gaps)
	}
	for _, want := range []string{"referenced by:", "attempts:", "next retry:", "last error:     waiting for "} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the report", want)
		}
	}
	for _, block := range strings.Split(out, "\ngap $")[1:] {
		var full, late string
		for _, line := range strings.Split(block, "\n") {
			switch fields := strings.Fields(line); {
			case len(fields) > 0 && fields[0] == "full.test":
				full = line
			case len(fields) > 0 && fields[0] == "late.test":
				late = line
			}
		}
		if !(strings.Contains(full, "unreachable") || strings.Contains(full, "backed_off")) || !strings.Contains(full, "request error") {
			t.Fatalf("full.test's answer %q: want it unreachable (or backed off) with its error", full)
		}
		if late == "" {
			t.Fatalf("no answer of late.test in:\n%s", block)
		}
		if !strings.Contains(block, "last error:     waiting for ") || !strings.Contains(block[strings.Index(block, "last error:"):], "full.test") {
			t.Fatalf("the last error does not say the gap waits for full.test:\n%s", block)
		}
	}

	var report gapsReport
	if err := json.Unmarshal([]byte(inspect(t, ExitOK, "--store", storeURL, "--room", room, "--gaps", "--json")), &report); err != nil {
		t.Fatal(err)
	}
	if report.RoomID != room || len(report.Gaps) != r.Gaps {
		t.Fatalf("--gaps --json: %+v", report)
	}
	for _, g := range report.Gaps {
		if g.BelowDepth == 0 || len(g.ReferencedBy) == 0 || g.Attempts == 0 || g.FirstSeen == nil || len(g.Peers) != 2 || g.Peers[0].Peer != "full.test" {
			t.Errorf("gap %+v", g)
		}
	}
}

// inspect --dag draws the room as SVG (well-formed, naming its gaps) or as DOT text.
func TestInspectDAG(t *testing.T) {
	pp := fixturepeer.StartPartialPeers(t, 22)
	pp.Full.SetFaults(fixturepeer.Fault{Kind: fixturepeer.FaultDisconnect})
	storeURL := "sqlite://" + filepath.Join(t.TempDir(), "events.db")
	st, err := store.Open(t.Context(), storeURL)
	if err != nil {
		t.Fatal(err)
	}
	fixturesync.Sync(t, st, pp.Room, []*fixturepeer.Peer{pp.Full, pp.Late}, 5)
	gaps, err := st.BackwardExtremities(t.Context(), string(pp.Room.ID), store.BackwardFilter{})
	_ = st.Close()
	if err != nil || len(gaps) == 0 {
		t.Fatalf("gaps %v, %v", gaps, err)
	}
	room := string(pp.Room.ID)

	svg := inspect(t, ExitOK, "--store", storeURL, "--room", room, "--dag")
	dec := xml.NewDecoder(strings.NewReader(svg))
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("the SVG does not parse: %v", err)
		}
	}
	for _, g := range gaps {
		if !strings.Contains(svg, `id="gap-`+g.EventID+`"`) {
			t.Errorf("the SVG has no node for the gap %s", g.EventID)
		}
	}
	dot := inspect(t, ExitOK, "--store", storeURL, "--room", room, "--dag", "--format", "dot", "--around", gaps[0].EventID, "--depth", "5")
	if !strings.HasPrefix(dot, "digraph ") || !strings.Contains(dot, "gap "+gaps[0].EventID) {
		t.Errorf("DOT around the gap:\n%s", dot)
	}

	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--dag", "--format", "png"}, ExitBadInput, `--format "png"`},
		{[]string{"--around", gaps[0].EventID}, ExitBadInput, "take --dag"},
		{[]string{"--dag", "--gaps"}, ExitBadInput, "exclude each other"},
		{[]string{"--dag", "--json"}, ExitBadInput, "exclude each other"},
		{[]string{"--dag", "--around", "$unknown"}, ExitBadInput, "no event $unknown"},
	} {
		var out, errOut bytes.Buffer
		args := append([]string{"inspect", "--store", storeURL, "--room", room}, c.args...)
		if code := Main(args, &out, &errOut); code != c.code || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%v: exit %d, %q; want %d, %q", c.args, code, errOut.String(), c.code, c.want)
		}
	}
}

// inspect runs `roomsync inspect` and returns its stdout, failing unless it exits with code.
func inspect(t *testing.T, code int, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if got := Main(append([]string{"inspect"}, args...), &out, &errOut); got != code {
		t.Fatalf("inspect %v: exit %d, want %d; stderr:\n%s", args, got, code, errOut.String())
	}
	return out.String()
}
