package federation

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix"
)

// ErrBadResponse marks an answer that parsed as HTTP but not as what the endpoint promises.
var ErrBadResponse = errors.New("bad federation response")

// Outcome classifies a request's result for peer health, back-off and metrics.
type Outcome string

const (
	OutcomeOK          Outcome = "ok"
	OutcomeNotFound    Outcome = "not_found"    // 404: the peer lacks it (or the endpoint)
	OutcomeForbidden   Outcome = "forbidden"    // 401/403: the peer will not show it to us
	OutcomeRateLimited Outcome = "rate_limited" // 429 or M_LIMIT_EXCEEDED
	OutcomeServerError Outcome = "server_error" // 5xx
	OutcomeBadRequest  Outcome = "bad_request"  // other 4xx: we asked wrongly, or it thinks so
	OutcomeBadResponse Outcome = "bad_response" // unparsable, oversized or lying answer
	OutcomeUnreachable Outcome = "unreachable"  // dial, TLS or timeout failure; 502, 503, 504
	OutcomeCanceled    Outcome = "canceled"     // our context ended
)

// Classify maps a request error to an Outcome, with the back-off the peer asked for when it
// rate-limited us (retry_after_ms, or a Retry-After header).
func Classify(err error) (Outcome, time.Duration) {
	if err == nil {
		return OutcomeOK, 0
	}
	if errors.Is(err, context.Canceled) {
		return OutcomeCanceled, 0
	}
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode >= 300 {
		status := httpErr.Response.StatusCode
		if httpErr.RespError != nil && httpErr.RespError.ErrCode == mautrix.MLimitExceeded.ErrCode {
			return OutcomeRateLimited, retryAfter(httpErr)
		}
		switch {
		case status == http.StatusTooManyRequests:
			return OutcomeRateLimited, retryAfter(httpErr)
		case status == http.StatusNotFound:
			return OutcomeNotFound, 0
		case status == http.StatusForbidden || status == http.StatusUnauthorized:
			return OutcomeForbidden, 0
		case status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout:
			// A proxy or load balancer answering for a homeserver that is not there.
			return OutcomeUnreachable, 0
		case status >= 500:
			return OutcomeServerError, 0
		default:
			return OutcomeBadRequest, 0
		}
	}
	if errors.Is(err, ErrBadResponse) || errors.Is(err, mautrix.ErrResponseTooLong) || errors.Is(err, mautrix.ErrBodyReadReachedLimit) {
		return OutcomeBadResponse, 0
	}
	if errors.As(err, &httpErr) && httpErr.Message == "failed to unmarshal response JSON" {
		return OutcomeBadResponse, 0
	}
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) {
		return OutcomeUnreachable, 0
	}
	if errors.As(err, &httpErr) && httpErr.Message == "request error" {
		return OutcomeUnreachable, 0
	}
	return OutcomeBadResponse, 0
}

// Unimplemented reports whether err is a peer saying it has no such endpoint, rather than
// answering from it: 404 (an unknown path) or 405 (an unknown method) with errcode
// M_UNRECOGNIZED, as the spec asks (MSC3743) and Dendrite v0.13.8 answers
// /timestamp_to_event; 404 or 405 with no Matrix error at all (older Dendrites' "404 page not
// found", Conduit's empty body, a proxy's page); or older Synapses' 400 M_UNRECOGNIZED. The
// same tests as Synapse's own client (FederationClient._is_unknown_endpoint). A 404 with any
// other errcode (M_NOT_FOUND: no such event or room) is an endpoint's answer.
func Unimplemented(err error) bool {
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		return false
	}
	code := ""
	if httpErr.RespError != nil {
		code = httpErr.RespError.ErrCode
	}
	switch httpErr.Response.StatusCode {
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return code == "" || code == mautrix.MUnrecognized.ErrCode
	case http.StatusBadRequest:
		return code == mautrix.MUnrecognized.ErrCode
	}
	return false
}

// maxRetryAfter caps the back-off a peer may ask for: an hour. A peer still overloaded after
// that says so again; a bad or hostile value cannot silence a peer for longer, and a huge one
// saturates here instead of overflowing into a short wait (retry_after_ms of 2^62 times a
// millisecond wraps to about two seconds).
const maxRetryAfter = time.Hour

// retryAfter reads how long a rate-limited peer asked us to wait: retry_after_ms, else the
// Retry-After header. Values past maxRetryAfter saturate to it; anything unreadable or not
// positive is 0.
func retryAfter(e mautrix.HTTPError) time.Duration {
	if e.RespError != nil {
		if ms, ok := e.RespError.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
			// In floating point: no product can overflow, and +Inf saturates like the rest.
			if d := ms * float64(time.Millisecond); d < float64(maxRetryAfter) {
				return time.Duration(d)
			}
			return maxRetryAfter
		}
	}
	if e.Response != nil {
		// An HTTP date is the peer's clock: measured from its Date header when it sent one,
		// so that a skew between our clocks does not stretch or cancel the wait.
		now := time.Now()
		if date, err := http.ParseTime(e.Response.Header.Get("Date")); err == nil {
			now = date
		}
		return parseRetryAfter(e.Response.Header.Get("Retry-After"), now)
	}
	return 0
}

// parseRetryAfter reads a Retry-After header (RFC 9110 §10.2.3): delay-seconds, or an
// HTTP-date taken relative to now.
func parseRetryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if strings.Trim(h, "0123456789") == "" {
		secs, err := strconv.ParseUint(h, 10, 64)
		if err != nil || secs > uint64(maxRetryAfter/time.Second) {
			// All digits, so the only error is a number too large: saturate.
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(h)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), maxRetryAfter)
}
