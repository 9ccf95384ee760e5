package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

const sendTestServer = "us.example"

// sendSetup is our Server with /send and the key routes on loopback, a fixture peer as the
// origin of requests (it serves its own key), and a mautrix client that signs as that peer.
type sendSetup struct {
	addr   string
	origin *fixturepeer.Peer
	// other is a second server whose key we can fetch.
	other *fixturepeer.Peer
	room  *fixturepeer.Room
	// signer signs as the origin; tamper, when set, changes each request after it is signed.
	signer *mfed.Client
	tamper func(*http.Request)

	mu  sync.Mutex
	got []receivedTxn
	// refuse, when set, is the receiver's answer to every transaction.
	refuse error
}

type receivedTxn struct {
	origin string
	pdus   []json.RawMessage
}

func newSendSetup(t *testing.T, withReceiver bool, configure ...func(*Server)) *sendSetup {
	t.Helper()
	room := fixturepeer.MustGenerate(t, fixturepeer.RoomOptions{Seed: 7, Events: 30})
	origin, other := fixturepeer.Start(t, room), fixturepeer.Start(t, room)
	endpoints := map[string]Endpoint{}
	for _, p := range []*fixturepeer.Peer{origin, other} {
		ep, err := ParseEndpoint(p.URL(), true)
		if err != nil {
			t.Fatal(err)
		}
		endpoints[p.ServerName()] = ep
	}
	client, err := NewClient(Options{ServerName: sendTestServer, Key: mfed.GenerateSigningKey(),
		Endpoints: endpoints, RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)

	s := &sendSetup{origin: origin, other: other, room: room}
	srv := NewServer()
	srv.HandleKeys(sendTestServer, mfed.GenerateSigningKey(), "test")
	srv.RequireAuth(sendTestServer, NewKeyRing(client, StaticNotaries()))
	if withReceiver {
		srv.HandleSend(s.receive)
	} else {
		srv.HandleSend(nil)
	}
	for _, c := range configure {
		c(srv)
	}
	s.addr = serve(t, srv)

	s.signer = origin.Pusher(s.addr, func(r *http.Request) {
		if s.tamper != nil {
			s.tamper(r)
		}
	})
	return s
}

// receive records what it got and names the PDUs by position: the first one refused, the
// others accepted, so that the answer shows both shapes.
func (s *sendSetup) receive(_ context.Context, origin string, pdus []json.RawMessage) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, receivedTxn{origin: origin, pdus: pdus})
	if s.refuse != nil {
		return nil, s.refuse
	}
	out := map[string]string{}
	for i := range pdus {
		out[fmt.Sprintf("$event%d", i)] = ""
	}
	out["$event0"] = "refused for the test"
	return out, nil
}

// signedSend PUTs a transaction with pdus PDUs of the room and edus EDUs, signed as the origin.
func (s *sendSetup) signedSend(t *testing.T, txnID string, pdus, edus int) (int, []byte) {
	t.Helper()
	txn := map[string]any{"origin": s.origin.ServerName(), "origin_server_ts": time.Now().UnixMilli()}
	var list []json.RawMessage
	for i := range pdus {
		list = append(list, s.room.Events[i%len(s.room.Events)].JSON)
	}
	txn["pdus"] = list
	var eduList []map[string]any
	for range edus {
		eduList = append(eduList, map[string]any{"edu_type": "m.typing", "content": map[string]any{}})
	}
	if eduList != nil {
		txn["edus"] = eduList
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, resp, err := s.signer.MakeFullRequest(ctx, mfed.RequestParams{
		ServerName: sendTestServer, Method: http.MethodPut, Path: mfed.URLPath{"v1", "send", txnID},
		Authenticate: true, RequestJSON: txn,
	})
	if resp == nil {
		t.Fatalf("send: %v", err)
	}
	return resp.StatusCode, body
}

// plain sends an unsigned request to our server.
func (s *sendSetup) plain(t *testing.T, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.addr+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return resp.StatusCode, out.Bytes()
}

func errcode(body []byte) string {
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(body, &e)
	return e.ErrCode
}

// A transaction signed by its origin, with the origin's key fetched by our KeyRing from the
// origin itself, reaches the receiver with the signing server as origin and the PDUs as sent;
// the answer holds the receiver's results in the spec's shape.
func TestSendAcceptsSignedTransaction(t *testing.T) {
	s := newSendSetup(t, true)
	status, body := s.signedSend(t, "txn1", 3, 2)
	if status != http.StatusOK {
		t.Fatalf("status %d (%s), want 200", status, body)
	}
	var resp struct {
		PDUs map[string]map[string]string `json:"pdus"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{"$event0": {"error": "refused for the test"}, "$event1": {}, "$event2": {}}
	if fmt.Sprint(resp.PDUs) != fmt.Sprint(want) {
		t.Errorf("answer %s, want pdus %v", body, want)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) != 1 || s.got[0].origin != s.origin.ServerName() || len(s.got[0].pdus) != 3 {
		t.Fatalf("receiver got %+v; want one transaction of 3 PDUs from %s", s.got, s.origin.ServerName())
	}
	for i, raw := range s.got[0].pdus {
		if !bytes.Equal(raw, s.room.Events[i].JSON) {
			t.Errorf("PDU %d reached the receiver changed", i)
		}
	}
}

// Requests /send refuses before the receiver sees them, and routes that need no signature.
func TestSendRefusals(t *testing.T) {
	s := newSendSetup(t, true)
	cases := []struct {
		name       string
		do         func() (int, []byte)
		wantStatus int
		wantCode   string
	}{
		{"unsigned", func() (int, []byte) {
			return s.plain(t, http.MethodPut, "/_matrix/federation/v1/send/t1", []byte(`{"pdus":[]}`))
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"signature over another request", func() (int, []byte) {
			s.tamper = func(r *http.Request) { r.URL.Path = strings.Replace(r.URL.Path, "/t2", "/t3", 1) }
			defer func() { s.tamper = nil }()
			return s.signedSend(t, "t2", 1, 0)
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"garbage X-Matrix header", func() (int, []byte) {
			s.tamper = func(r *http.Request) {
				r.Header.Set("Authorization", `X-Matrix origin="`+s.origin.ServerName()+`",key="ed25519:nope",sig="AAAA"`)
			}
			defer func() { s.tamper = nil }()
			return s.signedSend(t, "t4", 1, 0)
		}, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"more than 50 PDUs", func() (int, []byte) { return s.signedSend(t, "t5", 51, 0) }, http.StatusBadRequest, "M_BAD_JSON"},
		{"more than 100 EDUs", func() (int, []byte) { return s.signedSend(t, "t6", 1, 101) }, http.StatusBadRequest, "M_BAD_JSON"},
		{"10 MiB body", func() (int, []byte) {
			return s.plain(t, http.MethodPut, "/_matrix/federation/v1/send/t7", bytes.Repeat([]byte(" "), 10<<20))
		}, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"unknown path", func() (int, []byte) {
			return s.plain(t, http.MethodGet, "/_matrix/federation/v1/nonesuch", nil)
		}, http.StatusNotFound, "M_UNRECOGNIZED"},
		{"key route needs no signature", func() (int, []byte) {
			return s.plain(t, http.MethodGet, "/_matrix/key/v2/server", nil)
		}, http.StatusOK, ""},
		{"version route needs no signature", func() (int, []byte) {
			return s.plain(t, http.MethodGet, "/_matrix/federation/v1/version", nil)
		}, http.StatusOK, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := tc.do()
			if status != tc.wantStatus || errcode(body) != tc.wantCode {
				t.Errorf("status %d errcode %q (%.200s), want %d %q", status, errcode(body), body, tc.wantStatus, tc.wantCode)
			}
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) != 0 {
		t.Errorf("the receiver saw %d refused transactions", len(s.got))
	}
}

// Without a receiver /send is an endpoint we do not serve, signed or not.
func TestSendWithoutReceiverIsUnrecognized(t *testing.T) {
	s := newSendSetup(t, false)
	status, body := s.signedSend(t, "txn1", 1, 0)
	if status != http.StatusNotFound || errcode(body) != "M_UNRECOGNIZED" {
		t.Errorf("status %d errcode %q, want 404 M_UNRECOGNIZED", status, errcode(body))
	}
}

// A receiver's error refuses the whole transaction: a Matrix error as it is (403 for a
// transaction of rooms we do not replicate), anything else as a 500.
func TestSendRefusedWhole(t *testing.T) {
	s := newSendSetup(t, true)
	for _, tc := range []struct {
		err        error
		wantStatus int
		wantCode   string
	}{
		{mautrix.MForbidden.WithMessage("room not replicated here"), http.StatusForbidden, "M_FORBIDDEN"},
		{errors.New("disk on fire"), http.StatusInternalServerError, "M_UNKNOWN"},
	} {
		s.mu.Lock()
		s.refuse = tc.err
		s.mu.Unlock()
		status, body := s.signedSend(t, "whole-"+tc.wantCode, 1, 0)
		if status != tc.wantStatus || errcode(body) != tc.wantCode {
			t.Errorf("receiver error %v: status %d errcode %q (%s), want %d %q", tc.err, status, errcode(body), body, tc.wantStatus, tc.wantCode)
		}
	}
}

// Past its burst an origin gets 429 M_LIMIT_EXCEEDED with the wait, and the receiver does not
// see the refused requests; another origin keeps its own budget.
func TestSendRateLimitedPerOrigin(t *testing.T) {
	s := newSendSetup(t, true, func(srv *Server) { srv.OriginRate, srv.OriginBurst = 0.5, 3 })
	for i := range 3 {
		if status, body := s.signedSend(t, fmt.Sprintf("rl%d", i), 1, 0); status != http.StatusOK {
			t.Fatalf("request %d within the burst: status %d (%s)", i, status, body)
		}
	}
	status, body := s.signedSend(t, "rl3", 1, 0)
	var e struct {
		ErrCode      string `json:"errcode"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	}
	_ = json.Unmarshal(body, &e)
	if status != http.StatusTooManyRequests || e.ErrCode != "M_LIMIT_EXCEEDED" || e.RetryAfterMS <= 0 || e.RetryAfterMS > 2000 {
		t.Errorf("request past the burst: status %d %s, want 429 M_LIMIT_EXCEEDED with retry_after_ms in (0, 2000]", status, body)
	}
	s.mu.Lock()
	if len(s.got) != 3 {
		t.Errorf("the receiver saw %d transactions, want the 3 within the burst", len(s.got))
	}
	s.mu.Unlock()

	signer := s.other.Pusher(s.addr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := signer.MakeFullRequest(ctx, mfed.RequestParams{
		ServerName: sendTestServer, Method: http.MethodPut, Path: mfed.URLPath{"v1", "send", "other"},
		Authenticate: true, RequestJSON: map[string]any{"pdus": []any{}},
	})
	if resp == nil || resp.StatusCode != http.StatusOK {
		t.Errorf("another origin: %v %v, want 200", resp, err)
	}
}
