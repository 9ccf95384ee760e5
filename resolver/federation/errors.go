package federation

import (
	"context"
	"errors"
	"net"
	"net/http"
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
	OutcomeUnreachable Outcome = "unreachable"  // dial, TLS or timeout failure
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

// maxRetryAfter caps what a peer may ask: a day, so that a bad header cannot silence a peer
// for good.
const maxRetryAfter = 24 * time.Hour

// retryAfter reads how long a rate-limited peer asked us to wait.
func retryAfter(e mautrix.HTTPError) time.Duration {
	if e.RespError != nil {
		if ms, ok := e.RespError.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
			return min(time.Duration(ms)*time.Millisecond, maxRetryAfter)
		}
	}
	if e.Response != nil {
		if d, err := time.ParseDuration(e.Response.Header.Get("Retry-After") + "s"); err == nil && d > 0 {
			return min(d, maxRetryAfter)
		}
	}
	return 0
}
