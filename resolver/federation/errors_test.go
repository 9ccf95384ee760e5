package federation

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
)

func rateLimited(retryAfterMS any, header http.Header) mautrix.HTTPError {
	e := mautrix.HTTPError{Response: &http.Response{StatusCode: http.StatusTooManyRequests, Header: header}}
	if retryAfterMS != nil {
		e.RespError = &mautrix.RespError{ErrCode: mautrix.MLimitExceeded.ErrCode, ExtraData: map[string]any{"retry_after_ms": retryAfterMS}}
	}
	return e
}

func TestRetryAfter(t *testing.T) {
	peerNow := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	dated := func(retryAfter string) http.Header {
		return http.Header{"Retry-After": {retryAfter}, "Date": {peerNow.Format(http.TimeFormat)}}
	}
	cases := []struct {
		name string
		ms   any
		h    http.Header
		want time.Duration
	}{
		{"retry_after_ms", 1500.0, nil, 1500 * time.Millisecond},
		// 2^62 ms overflowed time.Duration to about 2 s: the peer was hammered.
		{"retry_after_ms of 2^62 saturates", float64(1 << 62), nil, maxRetryAfter},
		{"retry_after_ms of 1e300 saturates", 1e300, nil, maxRetryAfter},
		{"retry_after_ms past the cap", float64(2 * time.Hour / time.Millisecond), nil, maxRetryAfter},
		{"retry_after_ms negative, header used", -5.0, http.Header{"Retry-After": {"3"}}, 3 * time.Second},
		{"retry_after_ms not a number, header used", "soon", http.Header{"Retry-After": {"3"}}, 3 * time.Second},
		{"seconds", nil, http.Header{"Retry-After": {"120"}}, 2 * time.Minute},
		{"seconds past the cap", nil, http.Header{"Retry-After": {"7200"}}, maxRetryAfter},
		{"seconds past int64 saturate", nil, http.Header{"Retry-After": {"99999999999999999999999999"}}, maxRetryAfter},
		{"seconds past time.Duration saturate", nil, http.Header{"Retry-After": {strconv.FormatInt(1<<62, 10)}}, maxRetryAfter},
		{"HTTP date, from the peer's Date", nil, dated(peerNow.Add(10 * time.Minute).Format(http.TimeFormat)), 10 * time.Minute},
		{"HTTP date in RFC 850 form", nil, dated(peerNow.Add(time.Minute).Format("Monday, 02-Jan-06 15:04:05 GMT")), time.Minute},
		{"HTTP date past the cap", nil, dated(peerNow.Add(48 * time.Hour).Format(http.TimeFormat)), maxRetryAfter},
		{"HTTP date far past the cap", nil, dated("Fri, 31 Dec 9999 23:59:59 GMT"), maxRetryAfter},
		{"HTTP date passed", nil, dated(peerNow.Add(-time.Minute).Format(http.TimeFormat)), 0},
		{"negative seconds", nil, http.Header{"Retry-After": {"-5"}}, 0},
		{"fractional seconds", nil, http.Header{"Retry-After": {"1.5"}}, 0},
		{"a duration", nil, http.Header{"Retry-After": {"5m"}}, 0},
		{"garbage", nil, http.Header{"Retry-After": {"soon"}}, 0},
		{"nothing", nil, nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			outcome, got := Classify(rateLimited(tc.ms, tc.h))
			if outcome != OutcomeRateLimited || got != tc.want {
				t.Errorf("Classify = %s, %v; want %s, %v", outcome, got, OutcomeRateLimited, tc.want)
			}
		})
	}

	// Without a Date header an HTTP date is taken from our clock.
	h := http.Header{"Retry-After": {time.Now().Add(10 * time.Minute).UTC().Format(http.TimeFormat)}}
	if _, got := Classify(rateLimited(nil, h)); got < 9*time.Minute || got > 10*time.Minute {
		t.Errorf("HTTP date without Date: %v, want about 10m", got)
	}
}

func TestRetryAfterFromTheWire(t *testing.T) {
	// The JSON number as a peer sends it, through mautrix's error parsing.
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "99999999999999999999")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"errcode":"M_LIMIT_EXCEEDED","error":"slow","retry_after_ms":4611686018427387904}`))
	})
	p := newPeerServer(t, "peer.example", handler)
	_, err := p.client.Backfill(context.Background(), "peer.example", "!r:x", []string{"$e"}, 10)
	if outcome, retry := Classify(err); outcome != OutcomeRateLimited || retry != maxRetryAfter {
		t.Errorf("Classify(%v) = %s, %v; want %s, %v", err, outcome, retry, OutcomeRateLimited, maxRetryAfter)
	}
}

// TestUnimplemented: what a peer without an endpoint answers, as each server answers it,
// through mautrix's error parsing, against the answers of an endpoint the peer has.
func TestUnimplemented(t *testing.T) {
	cases := []struct {
		name        string
		status      int
		contentType string
		body        string
		want        bool
	}{
		{"Dendrite v0.13.8: 404 M_UNRECOGNIZED", 404, "application/json", `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`, true},
		{"a known path, an unknown method: 405 M_UNRECOGNIZED", 405, "application/json", `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`, true},
		{"older Dendrite: 404 page not found", 404, "text/plain; charset=utf-8", "404 page not found\n", true},
		{"older Conduit: 404 with no body", 404, "", "", true},
		{"a proxy's page", 404, "text/html", "<html><body><h1>404 Not Found</h1></body></html>", true},
		{"older Synapse: 400 M_UNRECOGNIZED", 400, "application/json", `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`, true},
		{"no such event: 404 M_NOT_FOUND", 404, "application/json", `{"errcode":"M_NOT_FOUND","error":"Unable to find event from 1 in direction b"}`, false},
		{"not allowed to see it: 403 M_FORBIDDEN", 403, "application/json", `{"errcode":"M_FORBIDDEN","error":"Host not in room"}`, false},
		{"a bad parameter: 400 M_INVALID_PARAM", 400, "application/json", `{"errcode":"M_INVALID_PARAM","error":"dir"}`, false},
		{"a bad request without a Matrix error", 400, "text/plain", "bad request", false},
		{"a server error: 500 M_UNRECOGNIZED", 500, "application/json", `{"errcode":"M_UNRECOGNIZED","error":"?"}`, false},
		{"an answer", 200, "application/json", `{"event_id":"$e","origin_server_ts":1}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeerServer(t, "peer.example", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.contentType != "" {
					w.Header().Set("Content-Type", tc.contentType)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			_, err := p.client.LatestEvent(context.Background(), "peer.example", "!r:x", time.Now())
			if got := Unimplemented(err); got != tc.want {
				t.Errorf("Unimplemented(%v) = %v, want %v", err, got, tc.want)
			}
		})
	}
	for _, err := range []error{nil, context.DeadlineExceeded, ErrBadResponse} {
		if Unimplemented(err) {
			t.Errorf("Unimplemented(%v) = true", err)
		}
	}
}
