package dendrite

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// PaginateResult is what Paginate measured.
type PaginateResult struct {
	Events, Pages int
	// Seconds is the time from the first page to the last; JoinSeconds that of the join.
	Seconds, JoinSeconds float64
	ReachedCreate        bool
}

// String is the one line hack/bench-dendrite.sh reads.
func (r PaginateResult) String() string {
	return fmt.Sprintf("events=%d pages=%d seconds=%.3f reached_create=%t join_seconds=%.3f",
		r.Events, r.Pages, r.Seconds, r.ReachedCreate, r.JoinSeconds)
}

// Paginate measures how fast a Dendrite that holds a room only from its join (send_join's
// state and auth chain) gives a client the room's history: with joinFrom it first joins the
// room over federation through that server (timed apart) and waits until /messages shows the
// join, then pages /messages backwards from the newest event, limit events a page, until
// m.room.create. Every page that reaches a backward extremity makes Dendrite /backfill from
// the room's other servers, verify and store what it gets, and answer with it.
func (p *Peer) Paginate(ctx context.Context, room, joinFrom, user string, limit int) (PaginateResult, error) {
	var r PaginateResult
	if limit < 1 {
		return r, fmt.Errorf("paginate %s: limit must be at least 1", room)
	}
	c, err := p.Login(ctx, user)
	if err != nil {
		return r, fmt.Errorf("paginate %s: %w", room, err)
	}
	if joinFrom != "" {
		t0 := time.Now()
		if err := c.Join(ctx, room, joinFrom); err != nil {
			return r, fmt.Errorf("paginate: %w", err)
		}
		r.JoinSeconds = time.Since(t0).Seconds()
	}
	t0 := time.Now()
	events, pages, err := c.pageBack(ctx, room, limit, func(e event) bool { return e.Type == "m.room.create" })
	el := time.Since(t0)
	if err != nil {
		return r, fmt.Errorf("paginate %s: %w", room, err)
	}
	r.Events, r.Pages, r.Seconds = len(events), pages, el.Seconds()
	for _, e := range events {
		r.ReachedCreate = r.ReachedCreate || e.Type == "m.room.create"
	}
	c.logf("/messages gave %d events in %d pages in %.3fs (%.0f events/s); m.room.create reached: %t",
		r.Events, r.Pages, r.Seconds, float64(r.Events)/el.Seconds(), r.ReachedCreate)
	return r, nil
}

// Join joins room over federation through server and waits until /messages shows the join,
// so that the room's history is what the join brought and backfills.
func (c *Client) Join(ctx context.Context, room, server string) error {
	t0 := time.Now()
	if err := c.join(ctx, room, server); err != nil {
		return err
	}
	c.logf("%s joined %s through %s in %.3fs", c.UserID, room, server, time.Since(t0).Seconds())
	return c.waitOwnJoin(ctx, room, time.Minute)
}

// waitOwnJoin waits until /messages shows our join as the newest event. The sync API, which
// serves /messages, follows the room server asynchronously; a page of one event that is our
// join is answered locally, without any backfill.
func (c *Client) waitOwnJoin(ctx context.Context, room string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	const every = 100 * time.Millisecond
	for n := int64(0); n <= int64(wait/every)+1; n++ {
		var resp struct {
			Chunk []event `json:"chunk"`
		}
		q := url.Values{"dir": {"b"}, "limit": {"1"}}
		if err := c.do(ctx, http.MethodGet, roomPath(room)+"/messages?"+q.Encode(), nil, &resp); err != nil {
			return err
		}
		if len(resp.Chunk) == 1 && resp.Chunk[0].Type == "m.room.member" &&
			resp.Chunk[0].StateKey != nil && *resp.Chunk[0].StateKey == c.UserID {
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
	return fmt.Errorf("/messages does not show our join after %v", wait)
}
