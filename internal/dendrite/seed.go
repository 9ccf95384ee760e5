package dendrite

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// SeedOptions say what Seed does.
type SeedOptions struct {
	// Room to send into (joined first); empty creates a public, world-readable room.
	Room string
	// JoinFrom joins Room over federation through this server name first.
	JoinFrom string
	// User is the localpart to register or log in as (DefaultUser when empty).
	User string
	// Count m.room.message events are sent, Parallel (default 8) at a time.
	Count, Parallel int
	// RoomVersion of a created room (default "11").
	RoomVersion string
	// History is a created room's history_visibility (default "world_readable", which
	// non-members may read over federation; "shared" shows history to members only).
	History string
	// JoinRule is a created room's join rule (default "public"; "invite" lets in only the
	// users a member invites).
	JoinRule string
	// Wait bounds the wait until /messages shows every sent event (default 2 min).
	Wait time.Duration
}

// ParseSeedArgs reads the flags hack/dendrite.sh seed takes after its positional arguments:
// --room ROOM_ID, --join-from SERVER_NAME, --parallel N, --user LOCALPART, --history VISIBILITY,
// --join-rule RULE.
func ParseSeedArgs(args []string) (SeedOptions, error) {
	var o SeedOptions
	for i := 0; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return o, fmt.Errorf("%s needs a value", args[i])
		}
		v := args[i+1]
		switch args[i] {
		case "--room":
			o.Room = v
		case "--join-from":
			o.JoinFrom = v
		case "--user":
			o.User = v
		case "--history":
			o.History = v
		case "--join-rule":
			o.JoinRule = v
		case "--parallel":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return o, fmt.Errorf("--parallel takes a number of at least 1, not %q", v)
			}
			o.Parallel = n
		default:
			return o, fmt.Errorf("unknown seed flag %q", args[i])
		}
	}
	if o.JoinFrom != "" && o.Room == "" {
		return o, fmt.Errorf("--join-from needs --room")
	}
	return o, nil
}

// Seed logs in as o.User, creates a public, world-readable room (or joins o.Room, through
// o.JoinFrom over federation when set), sends o.Count messages and waits until the client
// API's /messages shows them all, so that a following EventIDs is complete. It returns the
// room ID.
func (p *Peer) Seed(ctx context.Context, o SeedOptions) (string, error) {
	if o.Count < 0 || (o.JoinFrom != "" && o.Room == "") {
		return "", fmt.Errorf("seed %s: bad options %+v", p.Dir, o)
	}
	c, err := p.Login(ctx, o.User)
	if err != nil {
		return "", fmt.Errorf("seed %s: %w", p.Dir, err)
	}
	room, err := c.seed(ctx, o)
	if err != nil {
		return "", fmt.Errorf("seed %s: %w", p.Dir, err)
	}
	return room, nil
}

func (c *Client) seed(ctx context.Context, o SeedOptions) (string, error) {
	if o.Parallel < 1 {
		o.Parallel = 8
	}
	if o.RoomVersion == "" {
		o.RoomVersion = "11"
	}
	if o.Wait <= 0 {
		o.Wait = 2 * time.Minute
	}
	room := o.Room
	if room == "" {
		var err error
		if room, err = c.createRoom(ctx, o.RoomVersion, o.History, o.JoinRule); err != nil {
			return "", err
		}
	} else {
		t0 := time.Now()
		if err := c.join(ctx, room, o.JoinFrom); err != nil {
			return "", err
		}
		c.logf("%s joined %s in %v", c.UserID, room, time.Since(t0).Round(time.Millisecond))
	}
	sent, err := c.Send(ctx, room, o.Count, o.Parallel)
	if err != nil {
		return "", err
	}
	if len(sent) == 0 {
		return room, nil
	}
	if err := c.waitVisible(ctx, room, sent, o.Wait); err != nil {
		return "", err
	}
	return room, nil
}

func (c *Client) createRoom(ctx context.Context, version, history, joinRule string) (string, error) {
	if history == "" {
		history = "world_readable"
	}
	if joinRule == "" {
		joinRule = "public"
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	// public_chat: join rule public (unless told otherwise), so other servers' users can
	// join. History world_readable by default, so that non-members may read it over
	// federation.
	err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/createRoom", map[string]any{
		"preset":       "public_chat",
		"room_version": version,
		"name":         "roomsync seed",
		"initial_state": []map[string]any{{
			"type":      "m.room.history_visibility",
			"state_key": "",
			"content":   map[string]string{"history_visibility": history},
		}, {
			"type":      "m.room.join_rules",
			"state_key": "",
			"content":   map[string]string{"join_rule": joinRule},
		}},
	}, &created)
	if err != nil {
		return "", fmt.Errorf("creating the room: %w", err)
	}
	c.logf("%s created room %s (version %s)", c.UserID, created.RoomID, version)
	return created.RoomID, nil
}

// Send sends count messages, parallel at a time, and returns their event IDs. Transaction IDs
// are unique per call, so retries are idempotent.
func (c *Client) Send(ctx context.Context, room string, count, parallel int) ([]string, error) {
	run := time.Now().UnixNano()
	jobs := make(chan int)
	sent := make([]string, count)
	var sendErr error
	var errOnce sync.Once
	var done atomic.Int64
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	var wg sync.WaitGroup
	t0 := time.Now()
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				var resp struct {
					EventID string `json:"event_id"`
				}
				path := fmt.Sprintf("%s/send/m.room.message/seed-%d-%d", roomPath(room), run, i)
				err := c.do(sctx, http.MethodPut, path, map[string]string{
					"msgtype": "m.text",
					"body":    fmt.Sprintf("seed message %d from %s", i, c.UserID),
				}, &resp)
				if err == nil && resp.EventID == "" {
					err = fmt.Errorf("%s: no event_id in the answer", path)
				}
				if err != nil {
					errOnce.Do(func() { sendErr = err; scancel() })
					return
				}
				sent[i] = resp.EventID
				if n := done.Add(1); n%500 == 0 {
					c.logf("%d/%d sent", n, count)
				}
			}
		}()
	}
feed:
	for i := range count {
		select {
		case jobs <- i:
		case <-sctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if sendErr != nil {
		return nil, fmt.Errorf("after %d of %d messages: %w", done.Load(), count, sendErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if el := time.Since(t0); count > 1 {
		c.logf("sent %d messages in %v (%.0f/s, %d in parallel)", count, el.Round(time.Millisecond), float64(count)/el.Seconds(), parallel)
	}
	return sent, nil
}

// waitVisible waits until /messages shows every event of sent: the sync API, which serves
// /messages, follows the room server asynchronously.
func (c *Client) waitVisible(ctx context.Context, room string, sent []string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for attempt := 0; attempt < 100000; attempt++ {
		events, err := c.listEvents(ctx, room)
		if err != nil {
			return err
		}
		missing := missingOf(events, sent)
		if missing == 0 {
			c.logf("/messages shows %d events, every sent one included", len(events))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/messages still lacks %d of the %d sent events after %v", missing, len(sent), wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("/messages still lacks sent events after too many attempts")
}
