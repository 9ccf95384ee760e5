package dendrite

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

type event struct {
	EventID  string  `json:"event_id"`
	Type     string  `json:"type"`
	StateKey *string `json:"state_key"`
}

// EventIDs is the room as this Dendrite's client API shows it (/messages, dir=b, to the
// start; state events and m.room.create included), oldest first, logged in as user
// (DefaultUser when empty). A summary of the event types goes to Logf.
func (p *Peer) EventIDs(ctx context.Context, room, user string) ([]string, error) {
	c, err := p.Login(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("event IDs of %s on %s: %w", room, p.Dir, err)
	}
	events, err := c.listEvents(ctx, room)
	if err != nil {
		return nil, fmt.Errorf("event IDs of %s on %s: %w", room, p.Dir, err)
	}
	ids := make([]string, len(events))
	types := map[string]int{}
	state := 0
	for i, e := range events {
		ids[i] = e.EventID
		types[e.Type]++
		if e.StateKey != nil {
			state++
		}
	}
	names := make([]string, 0, len(types))
	for t := range types {
		names = append(names, t)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, t := range names {
		parts = append(parts, fmt.Sprintf("%s=%d", t, types[t]))
	}
	c.logf("%d events (%d state): %s", len(events), state, strings.Join(parts, " "))
	if types["m.room.create"] == 0 {
		c.logf("warning: no m.room.create among them")
	}
	return ids, nil
}

// listEvents pages /messages backwards from the newest event to the room's first, and returns
// the events oldest first, each once.
func (c *Client) listEvents(ctx context.Context, room string) ([]event, error) {
	all, _, err := c.pageBack(ctx, room, 1000, nil)
	return all, err
}

// pageBack pages /messages backwards, limit events a page, from the newest event until the
// server has no more or stop returns true for an event of a page; it returns the events oldest
// first, each once, and the number of pages asked for.
func (c *Client) pageBack(ctx context.Context, room string, limit int, stop func(event) bool) ([]event, int, error) {
	var all []event
	seen := map[string]bool{}
	from := ""
	const maxPages = 100000
	for page := 0; page < maxPages; page++ {
		q := url.Values{"dir": {"b"}, "limit": {fmt.Sprint(limit)}}
		if from != "" {
			q.Set("from", from)
		}
		var resp struct {
			Chunk []event `json:"chunk"`
			End   string  `json:"end"`
		}
		if err := c.do(ctx, http.MethodGet, roomPath(room)+"/messages?"+q.Encode(), nil, &resp); err != nil {
			return nil, page + 1, err
		}
		stopped := false
		for _, e := range resp.Chunk {
			if !seen[e.EventID] {
				seen[e.EventID] = true
				all = append(all, e)
			}
			if stop != nil && stop(e) {
				stopped = true
			}
		}
		next := nextFrom(resp.End)
		if stopped || len(resp.Chunk) == 0 || next == "" || next == from {
			for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
				all[i], all[j] = all[j], all[i]
			}
			return all, page + 1, nil
		}
		from = next
	}
	return nil, maxPages, fmt.Errorf("/messages of %s did not end within %d pages", room, maxPages)
}

// nextFrom turns the end token of a backwards /messages page into the from token of the next.
//
// Dendrite v0.13.8 quirk: its topology token is "t<depth>_<stream position>" and a page asks
// for events with (depth, stream position) at or below from, newest first. The end token it
// returns is the page's oldest event (D, P) "decremented" to (D-1, P+1000), which skips every
// event at depth D with a stream position below P, and every event at depth D-1 above P+1000:
// on a forked DAG (several events of one depth) events at page boundaries go missing. Undo the
// decrement and step one stream position back: (D, P-1). Tokens of another shape (and an empty
// end, which means the start was reached) are returned unchanged.
func nextFrom(end string) string {
	var d, p int64
	if n, err := fmt.Sscanf(end, "t%d_%d", &d, &p); err != nil || n != 2 || end != fmt.Sprintf("t%d_%d", d, p) {
		return end
	}
	// Decrement: depth 1 stays (1, P); a deeper (D, P) becomes (D-1, P+1000).
	D, P := d, p
	if p > 1000 {
		D, P = d+1, p-1000
	}
	return fmt.Sprintf("t%d_%d", D, P-1)
}

// JoinedMembers lists the room's joined members as the Dendrite in Dir sees them, read
// through its client API as user (DefaultUser when empty), who must be in the room.
func (p *Peer) JoinedMembers(ctx context.Context, room, user string) ([]string, error) {
	c, err := p.Login(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("members of %s on %s: %w", room, p.Dir, err)
	}
	var resp struct {
		Joined map[string]json.RawMessage `json:"joined"`
	}
	if err := c.do(ctx, http.MethodGet, roomPath(room)+"/joined_members", nil, &resp); err != nil {
		return nil, fmt.Errorf("members of %s on %s: %w", room, p.Dir, err)
	}
	members := make([]string, 0, len(resp.Joined))
	for m := range resp.Joined {
		members = append(members, m)
	}
	sort.Strings(members)
	return members, nil
}
