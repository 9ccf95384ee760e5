package federation

import (
	"context"
	"encoding/json"
	"encoding/json/jsontext"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

// The client fuzz asks a loopback peer that answers every request with the fuzzed status,
// Retry-After header and body, through the real Client: the request is signed and routed, the
// status and error body go through mautrix and Classify, and the body through the decoder of
// the endpoint asked, with its caps.
const (
	fuzzPeer   = "peer.example"
	fuzzNotary = "notary.example"
	// fuzzMaxResponse is the client's response cap: above MaxPDUBytes, so that a PDU past
	// its own limit can still arrive, and low enough for the cap itself to be reached.
	fuzzMaxResponse = 256 << 10
	// The limits the fuzz asks with.
	fuzzBackfillLimit = 3
	fuzzGMELimit      = 4
)

var fuzzBackfillFrom = []string{"$a", "$b"}

// answerServer answers every request with one canned answer.
type answerServer struct {
	mu         sync.Mutex
	status     int
	retryAfter string
	body       []byte
}

func (a *answerServer) set(status int, retryAfter string, body []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status, a.retryAfter, a.body = status, retryAfter, body
}

func (a *answerServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	status, retryAfter, body := a.status, a.retryAfter, a.body
	a.mu.Unlock()
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// fuzzEndpoints are the requests the fuzz makes, each with the checks of what it accepted.
var fuzzEndpoints = []struct {
	name string
	call func(ctx context.Context, t *testing.T, c *Client) error
}{
	{"backfill", func(ctx context.Context, t *testing.T, c *Client) error {
		pdus, err := c.Backfill(ctx, fuzzPeer, "!r:peer.example", fuzzBackfillFrom, fuzzBackfillLimit)
		checkPDUs(t, pdus, fuzzBackfillLimit+len(fuzzBackfillFrom))
		return err
	}},
	{"get_missing_events", func(ctx context.Context, t *testing.T, c *Client) error {
		pdus, err := c.MissingEvents(ctx, fuzzPeer, "!r:peer.example", []string{"$e"}, []string{"$l"}, fuzzGMELimit, 0)
		checkPDUs(t, pdus, fuzzGMELimit)
		return err
	}},
	{"event", func(ctx context.Context, t *testing.T, c *Client) error {
		ev, err := c.Event(ctx, fuzzPeer, "$e")
		if err == nil {
			checkPDUs(t, []json.RawMessage{ev}, 1)
		}
		return err
	}},
	{"timestamp_to_event", func(ctx context.Context, t *testing.T, c *Client) error {
		eventID, err := c.LatestEvent(ctx, fuzzPeer, "!r:peer.example", time.Now())
		if err == nil && eventID == "" {
			t.Fatal("no event ID and no error")
		}
		return err
	}},
	{"make_join", func(ctx context.Context, t *testing.T, c *Client) error {
		_, template, err := c.MakeJoin(ctx, fuzzPeer, "!r:peer.example", "@roomsync:us.example", []string{"10", "11"})
		if err == nil {
			checkPDUs(t, []json.RawMessage{template}, 1)
			_ = ReferencedIDs(template, "prev_events") // what JoinTemplate makes of it
		}
		return err
	}},
	{"make_leave", func(ctx context.Context, t *testing.T, c *Client) error {
		_, template, err := c.MakeLeave(ctx, fuzzPeer, "!r:peer.example", "@roomsync:us.example")
		if err == nil {
			checkPDUs(t, []json.RawMessage{template}, 1)
		}
		return err
	}},
	{"send_join", func(ctx context.Context, t *testing.T, c *Client) error {
		ans, err := c.SendJoin(ctx, fuzzPeer, "!r:peer.example", "$j", json.RawMessage(`{"type":"m.room.member"}`))
		checkPDUs(t, ans.State, maxJoinPDUs)
		checkPDUs(t, ans.AuthChain, maxJoinPDUs)
		if ans.Event != nil {
			checkPDUs(t, []json.RawMessage{ans.Event}, 1)
		}
		return err
	}},
	{"send_leave", func(ctx context.Context, _ *testing.T, c *Client) error {
		return c.SendLeave(ctx, fuzzPeer, "!r:peer.example", "$l", json.RawMessage(`{"type":"m.room.member"}`))
	}},
	{"state", func(ctx context.Context, t *testing.T, c *Client) error {
		state, chain, err := c.State(ctx, fuzzPeer, "!r:peer.example", "$e")
		checkPDUs(t, state, maxJoinPDUs)
		checkPDUs(t, chain, maxJoinPDUs)
		return err
	}},
	{"state_ids", func(ctx context.Context, t *testing.T, c *Client) error {
		state, chain, err := c.StateIDs(ctx, fuzzPeer, "!r:peer.example", "$e")
		for _, eventID := range append(state, chain...) {
			if !strings.HasPrefix(eventID, "$") {
				t.Fatalf("/state_ids answer names %q", eventID)
			}
		}
		return err
	}},
	{"key/v2/server", func(ctx context.Context, t *testing.T, c *Client) error {
		resp, err := c.ServerKeys(ctx, fuzzPeer)
		if err == nil {
			if resp == nil {
				t.Fatal("no key response and no error")
			}
			checkCollected(t, fuzzPeer, resp)
		}
		return err
	}},
	{"key/v2/query", func(ctx context.Context, t *testing.T, c *Client) error {
		resps, err := c.QueryKeys(ctx, fuzzNotary, fuzzPeer, "ed25519:k")
		for _, resp := range resps {
			checkCollected(t, fuzzPeer, resp)
		}
		return err
	}},
	{"key ring", func(ctx context.Context, t *testing.T, c *Client) error {
		// The ring asks the server, then the notary (and the notary for its own key), and
		// keeps only what the server signed itself.
		ring := NewKeyRing(c, StaticNotaries(fuzzNotary))
		want := fixturepeer.OriginKey(fuzzPeer)
		key, _, err := ring.Key(ctx, fuzzPeer, want.ID, time.Now())
		if err == nil && key != "" && key != want.Pub {
			t.Fatalf("key %s of %s is %s: the server never signed it", want.ID, fuzzPeer, key)
		}
		if other, _, _ := ring.Key(ctx, fuzzPeer, "ed25519:other", time.Now()); other != "" {
			t.Fatalf("key ed25519:other of %s is %s: the server never signed it", fuzzPeer, other)
		}
		return err
	}},
}

// checkPDUs checks PDUs a decoder accepted: at most max, each a JSON value within the limit.
func checkPDUs(t *testing.T, pdus []json.RawMessage, max int) {
	t.Helper()
	if len(pdus) > max {
		t.Fatalf("%d PDUs accepted, at most %d asked for", len(pdus), max)
	}
	for _, p := range pdus {
		if pduSize(jsontext.Value(p)) > MaxPDUBytes {
			t.Fatalf("a PDU of %d bytes accepted", len(p))
		}
		if !jsontext.Value(p).IsValid(jsontext.AllowInvalidUTF8(true), jsontext.AllowDuplicateNames(true)) {
			t.Fatalf("invalid PDU accepted: %.200q", p)
		}
	}
}

// checkCollected runs a decoded key response through the ring's checks: keys come out of it
// only when the response is the server's own and self-signed, and the only key that ever
// signed one in the fuzz is the fixture's key of fuzzPeer.
func checkCollected(t *testing.T, server string, resp *mfed.ServerKeyResponse) {
	t.Helper()
	keys := map[id.KeyID]verifyKey{}
	if err := collectKeys(keys, server, resp, time.Now()); err != nil {
		return
	}
	want := fixturepeer.OriginKey(fuzzPeer)
	if vk, ok := keys[want.ID]; !ok || vk.key != want.Pub {
		t.Fatalf("a key response that verified lacks the key that signed it: %v", keys)
	}
	if vk := keys[want.ID]; vk.validUntil.After(time.Now().Add(maxKeyValidity)) {
		t.Fatalf("key valid until %s, past the spec's week", vk.validUntil)
	}
}

// FuzzClientAnswers answers every request of the Client with arbitrary statuses, Retry-After
// headers and bodies. Nothing panics; an answer is either refused with an error that
// Classify gives a failing outcome (a bad response when the status was a success, since the
// body arrived whole) and a bounded back-off, or accepted within the request's caps.
func FuzzClientAnswers(f *testing.F) {
	for _, seed := range clientAnswerSeeds(f) {
		f.Add(seed.endpoint, seed.status, seed.retryAfter, seed.body)
	}
	answers, c := newAnswerClient(f)
	var serial sync.Mutex // one canned answer at a time
	f.Fuzz(func(t *testing.T, endpoint uint8, status uint16, retryAfter string, body []byte) {
		serial.Lock()
		defer serial.Unlock()
		code := 200 + int(status)%400 // informational statuses are the transport's business
		answers.set(code, printable(retryAfter), body)
		e := fuzzEndpoints[int(endpoint)%len(fuzzEndpoints)]
		err := e.call(context.Background(), t, c)
		if err == nil {
			if code >= 300 {
				t.Fatalf("%s: status %d accepted", e.name, code)
			}
			return
		}
		outcome, wait := Classify(err)
		switch {
		case outcome == OutcomeOK:
			t.Fatalf("%s: error %v classified as ok", e.name, err)
		case wait < 0 || wait > maxRetryAfter:
			t.Fatalf("%s: back-off %s from %v", e.name, wait, err)
		case code < 300 && outcome != OutcomeBadResponse:
			t.Fatalf("%s: status %d, %s: %v", e.name, code, outcome, err)
		}
	})
}

// newAnswerClient is a Client whose peer fuzzPeer, and notary fuzzNotary, is a loopback
// server that answers what answers is set to.
func newAnswerClient(tb testing.TB) (*answerServer, *Client) {
	tb.Helper()
	answers := &answerServer{}
	srv := httptest.NewServer(answers)
	tb.Cleanup(srv.Close)
	ep, err := ParseEndpoint(srv.URL, false)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := NewClient(Options{ServerName: "us.example", Key: mfed.GenerateSigningKey(),
		Endpoints:      map[string]Endpoint{fuzzPeer: ep, fuzzNotary: ep},
		RequestTimeout: 10 * time.Second, MaxResponseBytes: fuzzMaxResponse})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return answers, c
}

// The seeds reach what the fuzz checks: every endpoint has an answer it accepts.
func TestClientAnswerSeedsAreAccepted(t *testing.T) {
	answers, c := newAnswerClient(t)
	accepted := map[string]bool{}
	for _, seed := range clientAnswerSeeds(t) {
		answers.set(200+int(seed.status), seed.retryAfter, seed.body)
		e := fuzzEndpoints[seed.endpoint]
		if err := e.call(context.Background(), t, c); err == nil {
			accepted[e.name] = true
		}
	}
	for _, e := range fuzzEndpoints {
		if !accepted[e.name] {
			t.Errorf("no seed answer to %s is accepted", e.name)
		}
	}
}

// printable keeps the printable ASCII of s, all a header value the transport passes may hold.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
}
