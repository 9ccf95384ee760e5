package federation

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"maunium.net/go/mautrix"
)

// Defaults of the per-origin request limit. A homeserver keeps one transaction in flight per
// destination, and a server recovering history asks in pages of 100 events, so a legitimate
// origin stays far below these; a flood from one is cut off before it costs verification work.
const (
	DefaultOriginRate  = 20 // requests a second, sustained
	DefaultOriginBurst = 100
)

// maxTrackedOrigins bounds the limiter table. Only origins whose signature verified are
// tracked, so it fills only when that many real servers talk to us; then it starts afresh,
// which at worst grants each a new burst.
const maxTrackedOrigins = 10000

// originLimiter hands each authenticated origin its own token bucket.
type originLimiter struct {
	limit rate.Limit
	burst int

	mu       sync.Mutex
	byOrigin map[string]*rate.Limiter
}

func newOriginLimiter(perSecond float64, burst int) *originLimiter {
	return &originLimiter{limit: rate.Limit(perSecond), burst: burst, byOrigin: map[string]*rate.Limiter{}}
}

// reserve takes a token for origin, or says how long until one is free.
func (l *originLimiter) reserve(origin string, now time.Time) (ok bool, wait time.Duration) {
	l.mu.Lock()
	lim := l.byOrigin[origin]
	if lim == nil {
		if len(l.byOrigin) >= maxTrackedOrigins {
			clear(l.byOrigin)
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.byOrigin[origin] = lim
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		// A refused request spends no token.
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// refuseRateLimited answers 429 M_LIMIT_EXCEEDED with the wait, as the spec's retry_after_ms and as
// a Retry-After header, both rounded up.
func refuseRateLimited(w http.ResponseWriter, origin string, wait time.Duration) {
	ms := max(wait.Milliseconds(), 1)
	secs := int64(math.Ceil(wait.Seconds()))
	mautrix.MLimitExceeded.
		WithMessage("too many requests from %s", origin).
		WithExtraField("retry_after_ms", ms).
		WithExtraHeader("Retry-After", strconv.FormatInt(max(secs, 1), 10)).
		Write(w)
}
