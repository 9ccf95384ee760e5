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
