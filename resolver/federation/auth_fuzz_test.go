package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/roomsync/roomsync/internal/fixturepeer"
)

const (
	authUs     = "us.example"
	authOrigin = "origin.example"
)

// offlineTransport answers every request for a server the fuzz did not name: the header's
// origin is fuzzed, and its key must not be looked for on the network.
type offlineTransport struct{}

func (offlineTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("offline: not a server of the fuzz")
}

// authRoutes are the authenticated routes, with a method and a target each.
var authRoutes = []struct{ method, target string }{
	{http.MethodPut, "/_matrix/federation/v1/send/1"},
	{http.MethodPut, "/_matrix/federation/v2/invite/%21r:origin.example/$e"},
	{http.MethodGet, "/_matrix/federation/v1/backfill/%21r:origin.example?v=$e&limit=10"},
	{http.MethodPost, "/_matrix/federation/v1/get_missing_events/%21r:origin.example"},
	{http.MethodGet, "/_matrix/federation/v1/event/$e"},
	{http.MethodGet, "/_matrix/federation/v1/state_ids/%21r:origin.example?event_id=$e"},
}

// FuzzXMatrixAuth sends requests whose Authorization header is arbitrary to every
// authenticated route of a real Server, whose key ring fetches authOrigin's key from its key
// server on loopback (and nothing from anywhere else). No request reaches a handler; each is
// answered 400, 401 or 413 with a Matrix error. mautrix's header parser, which the listener
// uses, reads back what it wrote.
func FuzzXMatrixAuth(f *testing.F) {
	originKey := fixturepeer.OriginKey(authOrigin)
	keySrv := httptest.NewServer(NewKeyServer(authOrigin, originKey, "fuzz"))
	f.Cleanup(keySrv.Close)
	ep, err := ParseEndpoint(keySrv.URL, false)
	if err != nil {
		f.Fatal(err)
	}
	client, err := NewClient(Options{ServerName: authUs, Key: mfed.GenerateSigningKey(),
		Endpoints: map[string]Endpoint{authOrigin: ep}, RequestTimeout: 5 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(client.Close)
	client.fed.HTTP.Transport.(*routingTransport).discovery = offlineTransport{}

	reached := false
	srv := NewServer()
	srv.RequireAuth(authUs, NewKeyRing(client, StaticNotaries()))
	srv.HandleSend(func(context.Context, string, []json.RawMessage) (map[string]string, error) {
		reached = true
		return nil, nil
	})
	srv.HandleInvite(func(context.Context, string, Invite) (json.RawMessage, error) {
		reached = true
		return nil, nil
	})
	srv.HandleHistory(authUs, reachedHistory{&reached}, nil)

	// A real signature, of another request: the right origin, destination and key, but not
	// this URI.
	other := mfed.XMatrixAuth{Origin: authOrigin, Destination: authUs, KeyID: originKey.ID}
	other.Signature, _ = originKey.SignJSON(map[string]any{"method": "GET", "uri": "/_matrix/federation/v1/version", "origin": authOrigin, "destination": authUs})
	for _, seed := range []string{
		other.String(),
		strings.Replace(other.String(), `destination="us.example"`, `destination="them.example"`, 1),
		strings.Replace(other.String(), string(originKey.ID), "ed25519:other", 1),
		strings.Replace(other.String(), authOrigin, "127.0.0.1:1", 1),
		`X-Matrix origin=origin.example,key="ed25519:a",sig="AAAA"`,
		`X-Matrix origin="origin.example",destination="us.example",key="ed25519:a",sig="AAAA",extra="x=y"`,
		`X-Matrix origin="a=b",key="k",sig="s"`,
		`x-matrix origin="origin.example",key="ed25519:a",sig="AAAA"`,
		`X-Matrix ,,,=,`,
		`X-Matrix origin="[::1]:8448",key="ed25519:a",sig="AAAA"`,
		`Bearer token`,
		``,
	} {
		f.Add(seed, uint8(0), []byte(`{"pdus":[],"edus":[]}`))
	}
	f.Fuzz(func(t *testing.T, authorization string, route uint8, body []byte) {
		xma := mfed.ParseXMatrixAuth(authorization)
		if again := mfed.ParseXMatrixAuth(xma.String()); plainXMatrix(xma) && again != xma {
			t.Fatalf("%+v reads back as %+v", xma, again)
		}

		r := authRoutes[int(route)%len(authRoutes)]
		req := httptest.NewRequest(r.method, "http://"+authUs+r.target, bytes.NewReader(body))
		req.Header.Set("Authorization", authorization)
		rec := httptest.NewRecorder()
		reached = false
		srv.ServeHTTP(rec, req)
		if reached {
			t.Fatalf("a request with Authorization %q reached the handler", authorization)
		}
		if !slices.Contains([]int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusRequestEntityTooLarge}, rec.Code) {
			t.Fatalf("status %d: %s", rec.Code, rec.Body.Bytes())
		}
		var answer struct {
			ErrCode string `json:"errcode"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil || answer.ErrCode == "" {
			t.Fatalf("answer without an errcode (%v): %s", err, rec.Body.Bytes())
		}
	})
}

// plainXMatrix says whether every field of xma can be written into a header and read back:
// no separator or quote inside, no space around.
func plainXMatrix(xma mfed.XMatrixAuth) bool {
	for _, v := range []string{xma.Origin, xma.Destination, string(xma.KeyID), xma.Signature} {
		if strings.ContainsAny(v, `,="`) || strings.TrimSpace(v) != v {
			return false
		}
	}
	return true
}

// reachedHistory is a HistorySource that only notes it was reached.
type reachedHistory struct{ reached *bool }

func (h reachedHistory) note() { *h.reached = true }

func (h reachedHistory) Backfill(context.Context, string, string, []string, int) ([]json.RawMessage, error) {
	h.note()
	return nil, nil
}

func (h reachedHistory) MissingEvents(context.Context, string, string, MissingEventsRequest) ([]json.RawMessage, error) {
	h.note()
	return nil, nil
}

func (h reachedHistory) Event(context.Context, string, string) (json.RawMessage, error) {
	h.note()
	return nil, nil
}

func (h reachedHistory) StateIDs(context.Context, string, string, string) ([]string, []string, error) {
	h.note()
	return nil, nil, nil
}

func (h reachedHistory) State(context.Context, string, string, string) ([]json.RawMessage, []json.RawMessage, error) {
	h.note()
	return nil, nil, nil
}

func (h reachedHistory) EventAuth(context.Context, string, string, string) ([]json.RawMessage, error) {
	h.note()
	return nil, nil
}
