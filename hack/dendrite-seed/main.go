// Command dendrite-seed drives a Dendrite's client API for roomsync's tests: it makes a user
// (shared-secret registration), a public, world-readable room, and messages in it, and lists a
// room's event IDs as the server shows them. hack/dendrite.sh runs it; standard library only.
//
//	dendrite-seed seed -hs URL -secret-file F [-user NAME] [-count N] [-parallel N]
//	                   [-room ROOM_ID [-join-from SERVER]] [-room-version V]
//	dendrite-seed event-ids -hs URL -secret-file F [-user NAME] -room ROOM_ID
//	dendrite-seed paginate -hs URL -secret-file F [-user NAME] -room ROOM_ID [-join-from SERVER]
//	                       [-limit N]
//
// seed prints the room ID on stdout; event-ids prints the event IDs, oldest first, one a line;
// paginate (a benchmark: a Dendrite that joined a room over federation backfills its history
// while a client pages back through it) prints one line of figures. Progress and summaries go
// to stderr.
package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "seed":
		err = runSeed(os.Args[2:])
	case "event-ids":
		err = runEventIDs(os.Args[2:])
	case "paginate":
		err = runPaginate(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dendrite-seed:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: dendrite-seed seed -hs URL -secret-file F [-user NAME] [-count N] [-parallel N] [-room ROOM_ID [-join-from SERVER]] [-room-version V]
       dendrite-seed event-ids -hs URL -secret-file F [-user NAME] -room ROOM_ID
       dendrite-seed paginate -hs URL -secret-file F [-user NAME] -room ROOM_ID [-join-from SERVER] [-limit N]`)
	os.Exit(2)
}

// common holds the flags every subcommand takes.
type common struct {
	hs, secret, secretFile, user string
	timeout                      time.Duration
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.hs, "hs", "", "client API base URL, e.g. http://127.0.0.1:8008")
	fs.StringVar(&c.secret, "secret", "", "registration_shared_secret")
	fs.StringVar(&c.secretFile, "secret-file", "", "file holding registration_shared_secret")
	fs.StringVar(&c.user, "user", "seeder", "localpart of the user to register or log in")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Minute, "bound on the whole run")
}

func (c *common) client(ctx context.Context) (*client, error) {
	if c.hs == "" {
		return nil, errors.New("-hs is required")
	}
	secret := c.secret
	if c.secretFile != "" {
		b, err := os.ReadFile(c.secretFile)
		if err != nil {
			return nil, err
		}
		secret = strings.TrimSpace(string(b))
	}
	if secret == "" {
		return nil, errors.New("-secret or -secret-file is required")
	}
	cl := &client{
		base: strings.TrimRight(c.hs, "/"),
		http: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			Proxy:               nil, // loopback only: never through a proxy
		}},
	}
	if err := cl.login(ctx, c.user, secret); err != nil {
		return nil, err
	}
	return cl, nil
}

type client struct {
	base   string
	http   *http.Client
	token  string
	userID string
}

// matrixError is an error answer of the client API.
type matrixError struct {
	Status  int
	ErrCode string `json:"errcode"`
	Message string `json:"error"`
}

func (e *matrixError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.ErrCode, e.Message)
}

// do sends one request and decodes a 200 answer into out. Transient failures (transport
// errors, 5xx, 429) are retried a bounded number of times; the caller makes the request
// idempotent (PUT with a transaction ID, or GET).
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	const attempts = 6
	var last error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			delay := time.Duration(100<<i) * time.Millisecond
			var me *matrixError
			if errors.As(last, &me) && me.Status == http.StatusTooManyRequests {
				delay = time.Second
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(delay):
			}
		}
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(payload))
		if err != nil {
			return err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			last = fmt.Errorf("%s %s: %w", method, path, err)
			continue
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			last = fmt.Errorf("%s %s: reading answer: %w", method, path, err)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			me := &matrixError{Status: resp.StatusCode}
			_ = json.Unmarshal(data, me)
			if me.ErrCode == "" {
				me.Message = strings.TrimSpace(string(data))
			}
			last = fmt.Errorf("%s %s: %w", method, path, me)
			if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
				continue
			}
			return last
		}
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
		}
		return nil
	}
	return last
}

// login registers user through the shared-secret endpoint (/_synapse/admin/v1/register,
// which Dendrite serves when registration_shared_secret is set) or, when the user exists
// already, logs in with the password derived from the secret.
func (c *client) login(ctx context.Context, user, secret string) error {
	pw := hmac.New(sha256.New, []byte(secret))
	pw.Write([]byte("dendrite-seed password\x00" + user))
	password := hex.EncodeToString(pw.Sum(nil))[:32]

	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := c.do(ctx, http.MethodGet, "/_synapse/admin/v1/register", nil, &nonce); err != nil {
		return err
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(strings.Join([]string{nonce.Nonce, user, password, "notadmin"}, "\x00")))
	var session struct {
		AccessToken string `json:"access_token"`
		UserID      string `json:"user_id"`
	}
	err := c.do(ctx, http.MethodPost, "/_synapse/admin/v1/register", map[string]any{
		"nonce":    nonce.Nonce,
		"username": user,
		"password": password,
		"admin":    false,
		"mac":      hex.EncodeToString(mac.Sum(nil)),
	}, &session)
	var me *matrixError
	if errors.As(err, &me) && me.ErrCode == "M_USER_IN_USE" {
		err = c.do(ctx, http.MethodPost, "/_matrix/client/v3/login", map[string]any{
			"type":       "m.login.password",
			"identifier": map[string]string{"type": "m.id.user", "user": user},
			"password":   password,
		}, &session)
	}
	if err != nil {
		return fmt.Errorf("registering or logging in %q: %w", user, err)
	}
	if session.AccessToken == "" {
		return fmt.Errorf("no access token for %q", user)
	}
	c.token, c.userID = session.AccessToken, session.UserID
	return nil
}

func roomPath(roomID string) string { return "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) }

func runSeed(args []string) error {
	fs := flag.NewFlagSet("seed", flag.ExitOnError)
	var c common
	c.register(fs)
	count := fs.Int("count", 100, "m.room.message events to send")
	parallel := fs.Int("parallel", 8, "requests in flight at once")
	roomID := fs.String("room", "", "send into this room (joined first) instead of creating one")
	joinFrom := fs.String("join-from", "", "join -room over federation through this server name")
	roomVersion := fs.String("room-version", "11", "room version of a created room")
	wait := fs.Duration("wait", 2*time.Minute, "bound on waiting until /messages shows every sent event")
	_ = fs.Parse(args)
	if fs.NArg() != 0 || *count < 0 || *parallel < 1 || (*joinFrom != "" && *roomID == "") {
		usage()
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}

	room := *roomID
	if room == "" {
		var created struct {
			RoomID string `json:"room_id"`
		}
		// public_chat: join rule public, so other servers' users can join. History
		// world_readable in initial_state, so that non-members may read it over federation.
		err := cl.do(ctx, http.MethodPost, "/_matrix/client/v3/createRoom", map[string]any{
			"preset":       "public_chat",
			"room_version": *roomVersion,
			"name":         "roomsync seed",
			"initial_state": []map[string]any{{
				"type":      "m.room.history_visibility",
				"state_key": "",
				"content":   map[string]string{"history_visibility": "world_readable"},
			}},
		}, &created)
		if err != nil {
			return fmt.Errorf("creating the room: %w", err)
		}
		room = created.RoomID
		fmt.Fprintf(os.Stderr, "dendrite-seed: %s created room %s (version %s)\n", cl.userID, room, *roomVersion)
	} else {
		path := "/_matrix/client/v3/join/" + url.PathEscape(room)
		if *joinFrom != "" {
			path += "?server_name=" + url.QueryEscape(*joinFrom)
		}
		t0 := time.Now()
		if err := cl.do(ctx, http.MethodPost, path, map[string]any{}, nil); err != nil {
			return fmt.Errorf("joining %s: %w", room, err)
		}
		fmt.Fprintf(os.Stderr, "dendrite-seed: %s joined %s in %v\n", cl.userID, room, time.Since(t0).Round(time.Millisecond))
	}

	// Send, *parallel at a time. Transaction IDs are unique per run, so retries are idempotent.
	run := time.Now().UnixNano()
	jobs := make(chan int)
	sent := make([]string, *count)
	var sendErr error
	var errOnce sync.Once
	var done atomic.Int64
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := 0; w < *parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				var resp struct {
					EventID string `json:"event_id"`
				}
				path := fmt.Sprintf("%s/send/m.room.message/seed-%d-%d", roomPath(room), run, i)
				err := cl.do(sctx, http.MethodPut, path, map[string]string{
					"msgtype": "m.text",
					"body":    fmt.Sprintf("seed message %d from %s", i, cl.userID),
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
					fmt.Fprintf(os.Stderr, "dendrite-seed: %d/%d sent\n", n, *count)
				}
			}
		}()
	}
feed:
	for i := 0; i < *count; i++ {
		select {
		case jobs <- i:
		case <-sctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if sendErr != nil {
		return fmt.Errorf("after %d of %d messages: %w", done.Load(), *count, sendErr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	el := time.Since(t0)
	if *count > 0 {
		fmt.Fprintf(os.Stderr, "dendrite-seed: sent %d messages in %v (%.0f/s, %d in parallel)\n",
			*count, el.Round(time.Millisecond), float64(*count)/el.Seconds(), *parallel)
	}

	// The sync API, which /messages reads, follows the room server asynchronously: wait until it
	// shows every event sent, so that a following event-ids is complete.
	deadline := time.Now().Add(*wait)
	for attempt := 0; ; attempt++ {
		events, err := cl.listEvents(ctx, room)
		if err != nil {
			return err
		}
		have := make(map[string]bool, len(events))
		for _, e := range events {
			have[e.EventID] = true
		}
		missing := 0
		for _, id := range sent {
			if !have[id] {
				missing++
			}
		}
		if missing == 0 {
			fmt.Fprintf(os.Stderr, "dendrite-seed: /messages shows %d events, every sent one included\n", len(events))
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/messages still lacks %d of the %d sent events after %v", missing, len(sent), *wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	fmt.Println(room)
	return nil
}

type event struct {
	EventID  string  `json:"event_id"`
	Type     string  `json:"type"`
	StateKey *string `json:"state_key"`
}

// listEvents pages /messages backwards from the newest event to the room's first, and returns
// the events oldest first, each once.
func (c *client) listEvents(ctx context.Context, room string) ([]event, error) {
	all, _, err := c.pageBack(ctx, room, 1000, nil)
	return all, err
}

// pageBack pages /messages backwards, limit events a page, from the newest event until the
// server has no more or stop returns true for an event of a page; it returns the events oldest
// first, each once, and the number of pages asked for.
func (c *client) pageBack(ctx context.Context, room string, limit int, stop func(event) bool) ([]event, int, error) {
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

func runEventIDs(args []string) error {
	fs := flag.NewFlagSet("event-ids", flag.ExitOnError)
	var c common
	c.register(fs)
	roomID := fs.String("room", "", "room ID")
	_ = fs.Parse(args)
	if fs.NArg() != 0 || *roomID == "" {
		usage()
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	events, err := cl.listEvents(ctx, *roomID)
	if err != nil {
		return err
	}
	out := &strings.Builder{}
	types := map[string]int{}
	state := 0
	for _, e := range events {
		out.WriteString(e.EventID)
		out.WriteByte('\n')
		types[e.Type]++
		if e.StateKey != nil {
			state++
		}
	}
	if _, err := os.Stdout.WriteString(out.String()); err != nil {
		return err
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
	fmt.Fprintf(os.Stderr, "dendrite-seed: %d events (%d state): %s\n", len(events), state, strings.Join(parts, " "))
	if types["m.room.create"] == 0 {
		fmt.Fprintln(os.Stderr, "dendrite-seed: warning: no m.room.create among them")
	}
	return nil
}

// runPaginate measures how fast a Dendrite that holds a room only from its join (send_join's
// state and auth chain) gives a client the room's history: with -join-from it first joins the
// room over federation through that server (timed apart) and waits until /messages shows the
// join, then pages /messages backwards from the newest event, -limit events a page, until
// m.room.create. Every page that reaches a backward extremity makes Dendrite /backfill from
// the room's other servers, verify and store what it gets, and answer with it. Prints on
// stdout: events=N pages=P seconds=S reached_create=true|false join_seconds=J.
func runPaginate(args []string) error {
	fs := flag.NewFlagSet("paginate", flag.ExitOnError)
	var c common
	c.register(fs)
	roomID := fs.String("room", "", "room ID")
	joinFrom := fs.String("join-from", "", "first join -room over federation through this server name")
	limit := fs.Int("limit", 100, "events asked for per /messages page (Dendrite caps it at 100)")
	joinWait := fs.Duration("join-wait", time.Minute, "bound on waiting until /messages shows our join")
	_ = fs.Parse(args)
	if fs.NArg() != 0 || *roomID == "" || *limit < 1 {
		usage()
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	room := *roomID

	joinSeconds := 0.0
	if *joinFrom != "" {
		path := "/_matrix/client/v3/join/" + url.PathEscape(room) + "?server_name=" + url.QueryEscape(*joinFrom)
		t0 := time.Now()
		if err := cl.do(ctx, http.MethodPost, path, map[string]any{}, nil); err != nil {
			return fmt.Errorf("joining %s: %w", room, err)
		}
		joinSeconds = time.Since(t0).Seconds()
		fmt.Fprintf(os.Stderr, "dendrite-seed: %s joined %s through %s in %.3fs\n", cl.userID, room, *joinFrom, joinSeconds)
		// The sync API, which serves /messages, follows the room server asynchronously. A page of
		// one event that is our join is answered locally, without any backfill.
		deadline := time.Now().Add(*joinWait)
		for {
			var resp struct {
				Chunk []event `json:"chunk"`
			}
			q := url.Values{"dir": {"b"}, "limit": {"1"}}
			if err := cl.do(ctx, http.MethodGet, roomPath(room)+"/messages?"+q.Encode(), nil, &resp); err != nil {
				return err
			}
			if len(resp.Chunk) == 1 && resp.Chunk[0].Type == "m.room.member" &&
				resp.Chunk[0].StateKey != nil && *resp.Chunk[0].StateKey == cl.userID {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("/messages does not show our join after %v", *joinWait)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}

	t0 := time.Now()
	events, pages, err := cl.pageBack(ctx, room, *limit, func(e event) bool { return e.Type == "m.room.create" })
	el := time.Since(t0)
	if err != nil {
		return err
	}
	reached := false
	for _, e := range events {
		reached = reached || e.Type == "m.room.create"
	}
	fmt.Fprintf(os.Stderr, "dendrite-seed: /messages gave %d events in %d pages in %.3fs (%.0f events/s); m.room.create reached: %t\n",
		len(events), pages, el.Seconds(), float64(len(events))/el.Seconds(), reached)
	fmt.Printf("events=%d pages=%d seconds=%.3f reached_create=%t join_seconds=%.3f\n",
		len(events), pages, el.Seconds(), reached, joinSeconds)
	return nil
}
