package dendrite

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// ForkedRoomOptions shape the room BuildForkedRoom makes.
type ForkedRoomOptions struct {
	// Rounds of activity from both servers at once (default 60).
	Rounds int
	// MessagesPerRound is the number of m.room.message events each server sends in a round
	// (default 8).
	MessagesPerRound int
	// RoomVersion of the room (default "11").
	RoomVersion string
	// Seed picks the order of the rounds' state changes and the users they target.
	Seed uint64
	// AfterSetUp, when set, runs once the room exists and its users are in, before the
	// rounds: where another server joins so that the whole history is its to see.
	AfterSetUp func(ctx context.Context, roomID string) error
}

// ForkedRoom is what was built.
type ForkedRoom struct {
	RoomID string
	// Events is the number of events A's client API shows once both servers show the same.
	Events int
	// Users are the users of each server (server name → user IDs).
	Users map[string][]string
	// Admins are the localparts of each server's admin (server name → localpart): they stay
	// joined throughout, so they may read the whole room whatever its history visibility.
	Admins map[string]string
	// Made counts the requests that succeeded (each an event), by kind: "message", "topic",
	// "power_levels", "join_rules", "history_visibility", "leave", "kick", "ban", "unban",
	// "invite", "join" (the creator's join, part of the creation, is not counted).
	Made map[string]int
	// Refused counts the requests of those kinds that a server refused (403) because the other
	// server had changed the room first; the build went on without them.
	Refused map[string]int
	// Undone counts the kicks and bans (with their unbans) after which both servers showed the
	// user joined all the same: state resolution of the forks kept an older join. Mended counts
	// the users both servers showed out of the room when a round started (a join undone the
	// same way, or a user not brought back in the round before), who were brought back then.
	Undone, Mended int
}

// Defaults of ForkedRoomOptions and bounds of the build's waits.
const (
	defaultRounds    = 60
	defaultRoundMsgs = 8
	forkedRoomSettle = 2 * time.Minute  // both servers show the same events
	forkedRoomSeen   = 30 * time.Second // both servers show a change one of them made
	forkedRoomPoll   = 100 * time.Millisecond
)

// action is the state change of a round, besides the messages.
type action int

const (
	// actTopic: the topic set by a moderator of A and the admin of B at once.
	actTopic action = iota
	// actLeave: one user of each server leaves and joins again.
	actLeave
	// actKick: each admin kicks a user of the other server, who joins again.
	actKick
	// actBan: each admin bans a user of the other server and unbans them; they join again.
	actBan
	// actPower: one admin changes the power levels (the servers' admins in turn).
	actPower
	// actRules: one admin toggles the join rule (public ↔ invite) while the other changes the
	// history visibility; a user of the toggling server then leaves and joins again under the
	// new rule.
	actRules
	numActions
)

func (a action) String() string {
	return [...]string{"topic", "leave", "kick", "ban", "power", "rules"}[a]
}

// round is what one round does beyond its messages.
type round struct {
	Action action
	// Target is, for each server (0: A, 1: B), the index of its ordinary user the action is
	// about (who leaves, or whom the other server's admin kicks or bans).
	Target [2]int
	// Toggler is the server that toggles the join rule in an actRules round.
	Toggler int
}

// planRounds is the deterministic schedule of n rounds for seed: every block of numActions
// rounds holds each action once, in an order the seed shuffles, so that every kind of change
// happens as often as any other; targets are drawn among each server's ordinary users;
// actRules rounds alternate the toggling server.
func planRounds(n, users int, seed uint64) []round {
	rng := rand.New(rand.NewPCG(seed, 0x666f726b6564)) // second word: any constant
	plan := make([]round, 0, max(n, 0))
	toggles := 0
	var order []int
	for i := range max(n, 0) {
		if i%int(numActions) == 0 {
			order = rng.Perm(int(numActions))
		}
		r := round{Action: action(order[i%int(numActions)])}
		if users > 0 {
			r.Target = [2]int{rng.IntN(users), rng.IntN(users)}
		}
		if r.Action == actRules {
			r.Toggler = toggles % 2
			toggles++
		}
		plan = append(plan, r)
	}
	return plan
}

// nextJoinRule toggles the join rule between public and invite.
func nextJoinRule(rule string) string {
	if rule == "invite" {
		return "public"
	}
	return "invite"
}

// nextHistory cycles the history visibility shared → joined → invited → shared.
func nextHistory(h string) string {
	switch h {
	case "shared":
		return "joined"
	case "joined":
		return "invited"
	default:
		return "shared"
	}
}

// powerLevels is the m.room.power_levels content server side (0: A, 1: B) sends in round r.
// Every version keeps both admins at 100 and the moderator at 50, whichever of two concurrent
// versions state resolution picks: the admins must be able to kick, ban and change the rules
// in every later round, and neither admin may change the level of the other (equal) one.
// Only the levels of side's ordinary users (0-30, below the kick and ban levels' senders)
// change from round to round, and the level of an event type no one sends, which carries the
// round: Dendrite answers a PUT of the content the room has already without a new event.
func powerLevels(r, side int, admins [2]string, mod string, users []string) map[string]any {
	levels := map[string]int{admins[0]: 100, admins[1]: 100}
	if mod != "" {
		levels[mod] = 50
	}
	for j, u := range users {
		levels[u] = 10 * ((r + j + side) % 4)
	}
	return map[string]any{
		"users":          levels,
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         50,
		"events": map[string]int{
			"m.room.power_levels":       100,
			"m.room.history_visibility": 100,
			"m.room.tombstone":          100,
			"m.room.server_acl":         100,
			"m.room.encryption":         100,
			"m.room.join_rules":         50,
			"m.room.topic":              50,
			"m.room.name":               50,
			"m.room.avatar":             50,
			"m.room.canonical_alias":    50,
			roundEventType:              r % 101,
		},
		"notifications": map[string]int{"room": 50},
	}
}

// roundEventType is the event type whose power level powerLevels sets to the round.
const roundEventType = "io.roomsync.forked_room.round"

// raced reports whether err is a refusal a server answers when the other server changed the
// room first (403), as opposed to a failure that must stop the build.
func raced(err error) bool {
	var me *matrixError
	return errors.As(err, &me) && me.Status == http.StatusForbidden
}

// unbanRaced reports whether err is Dendrite's answer to an unban of a user who is not banned
// (400, not 403): a ban can be undone by the other server's events between our ban and unban.
func unbanRaced(err error) bool {
	var me *matrixError
	return errors.As(err, &me) && me.Status == http.StatusBadRequest && strings.Contains(me.Message, "banned")
}

// member is a user of the room and the side (0: A, 1: B) whose server they belong to.
type member struct {
	c    *Client
	side int
}

// side is one server's users.
type side struct {
	name  string
	admin *member
	// mod is A's moderator (power 50); nil on B.
	mod *member
	// users are the ordinary users, the ones who leave and whom the admins kick and ban.
	users []*member
	all   []*member
	// via is the server to join through: A's name for B's users, empty for A's.
	via string
}

// builder holds a forked room's build.
type builder struct {
	o     ForkedRoomOptions
	room  string
	sides [2]*side
	txn   atomic.Int64
	run   int64
	logf  func(string, ...any)

	mu             sync.Mutex
	joined         map[string]bool // user ID → joined on both servers when the round started
	made           map[string]int
	refused        map[string]int
	undone, mended int
}

// BuildForkedRoom makes, on two Dendrites a and b, a room whose history forks and merges many
// times and changes its state from both sides, through the client API only. An admin of A
// creates it (public, history shared) and gives B's admin power 100 and A's moderator 50;
// A's users join, and B's over federation through A. Then, for o.Rounds rounds, one goroutine
// per server, started together, sends o.MessagesPerRound messages and makes the round's
// change (the order comes from o.Seed): the topic set on both servers; a user of each leaving
// and joining again; each admin kicking, or banning and unbanning, a user of the other server,
// who joins again; power levels set by both admins; the join rule toggled (public ↔ invite;
// invited before joining while it is invite) on one server while the other changes the
// history visibility (shared → joined → invited). Both servers extend the DAG from the same
// events at once, so it forks every round and merges in the next.
//
// State resolution of the forks may undo a membership change one fork did not know about:
// with Dendrite v0.13.8 both servers have been seen to end up showing a kicked or unbanned
// user joined, or a user who had left and joined again as left. So every round starts by
// waiting until both servers show the same join rule, history visibility and memberships
// (bounded), brings back the users both show out, and lets only users both show joined send:
// a message from a user one server holds out would be soft-failed there (stored, never shown
// to clients), and the servers would never show the same events.
//
// Requests refused (403) because the other server changed the room first are counted in
// Refused and the build goes on; any other failure stops it. It returns once both servers'
// client APIs show the same event IDs (waiting at most two minutes).
func BuildForkedRoom(ctx context.Context, a, b *Peer, o ForkedRoomOptions) (ForkedRoom, error) {
	if o.Rounds <= 0 {
		o.Rounds = defaultRounds
	}
	if o.MessagesPerRound <= 0 {
		o.MessagesPerRound = defaultRoundMsgs
	}
	if o.RoomVersion == "" {
		o.RoomVersion = "11"
	}
	bl := &builder{o: o, run: time.Now().UnixNano(), logf: a.logf, joined: map[string]bool{},
		made: map[string]int{}, refused: map[string]int{}}
	t0 := time.Now()
	if err := bl.setUp(ctx, a, b); err != nil {
		return ForkedRoom{}, fmt.Errorf("forked room: %w", err)
	}
	if o.AfterSetUp != nil {
		if err := o.AfterSetUp(ctx, bl.room); err != nil {
			return ForkedRoom{}, fmt.Errorf("forked room %s, after the set-up: %w", bl.room, err)
		}
	}
	bl.logf("forked room %s: %d users joined on both servers in %v; %d rounds next",
		bl.room, len(bl.sides[0].all)+len(bl.sides[1].all), time.Since(t0).Round(time.Millisecond), o.Rounds)
	plan := planRounds(o.Rounds, len(bl.sides[0].users), o.Seed)
	for r, p := range plan {
		if err := bl.playRound(ctx, r, p); err != nil {
			return ForkedRoom{}, fmt.Errorf("forked room %s, round %d (%s): %w", bl.room, r, p.Action, err)
		}
		if (r+1)%10 == 0 || r+1 == len(plan) {
			bl.mu.Lock()
			bl.logf("forked room: round %d/%d after %v: made %v, refused %v",
				r+1, len(plan), time.Since(t0).Round(time.Millisecond), bl.made, bl.refused)
			bl.mu.Unlock()
		}
	}
	n, err := bl.settle(ctx)
	if err != nil {
		return ForkedRoom{}, fmt.Errorf("forked room %s: %w", bl.room, err)
	}
	fr := ForkedRoom{RoomID: bl.room, Events: n, Users: map[string][]string{}, Admins: map[string]string{},
		Made: bl.made, Refused: bl.refused, Undone: bl.undone, Mended: bl.mended}
	for _, s := range bl.sides {
		for _, m := range s.all {
			fr.Users[s.name] = append(fr.Users[s.name], m.c.UserID)
		}
		fr.Admins[s.name] = localpart(s.admin.c.UserID)
	}
	bl.logf("forked room %s built in %v: %d events, made %v, refused %v; %d removals undone, %d users mended",
		bl.room, time.Since(t0).Round(time.Millisecond), n, bl.made, bl.refused, bl.undone, bl.mended)
	return fr, nil
}

func localpart(userID string) string {
	l, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return l
}

// setUp registers the users, creates the room, sets the first power levels and joins
// everyone, then waits until each server shows every user joined.
func (bl *builder) setUp(ctx context.Context, a, b *Peer) error {
	for i, p := range []*Peer{a, b} {
		prefix := string(rune('a' + i))
		s := &side{name: p.ServerName()}
		if i == 1 {
			s.via = a.ServerName()
		}
		roles := []string{"admin", "1", "2", "3"}
		if i == 0 {
			roles = []string{"admin", "mod", "1", "2", "3"}
		}
		for _, role := range roles {
			c, err := p.Login(ctx, prefix+"-"+role)
			if err != nil {
				return err
			}
			m := &member{c: c, side: i}
			switch role {
			case "admin":
				s.admin = m
			case "mod":
				s.mod = m
			default:
				s.users = append(s.users, m)
			}
			s.all = append(s.all, m)
		}
		bl.sides[i] = s
	}

	var created struct {
		RoomID string `json:"room_id"`
	}
	err := bl.sides[0].admin.c.do(ctx, http.MethodPost, "/_matrix/client/v3/createRoom", map[string]any{
		"preset":       "public_chat",
		"room_version": bl.o.RoomVersion,
		"name":         "roomsync forked room",
		"initial_state": []map[string]any{{
			"type": "m.room.history_visibility", "state_key": "",
			"content": map[string]string{"history_visibility": "shared"},
		}},
	}, &created)
	if err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	bl.room = created.RoomID
	bl.joined[bl.sides[0].admin.c.UserID] = true
	// The power levels come before anyone joins, so that B's admin may act from its first
	// round on, whatever B has received by then.
	if err := bl.putState(ctx, bl.sides[0].admin, "m.room.power_levels", bl.powerLevels(0, 0)); err != nil {
		return err
	}
	bl.made["power_levels"]++
	for _, s := range bl.sides {
		for _, m := range s.all {
			if bl.joined[m.c.UserID] {
				continue
			}
			if err := m.c.join(ctx, bl.room, s.via); err != nil {
				return fmt.Errorf("%s: %w", m.c.UserID, err)
			}
			bl.joined[m.c.UserID] = true
			bl.made["join"]++
		}
	}
	for _, s := range bl.sides {
		for _, m := range s.all {
			ms, err := bl.agreed(ctx, "m.room.member", m.c.UserID, "membership")
			if err != nil {
				return err
			}
			if ms != "join" {
				return fmt.Errorf("both servers show %s's membership as %q after the join", m.c.UserID, ms)
			}
		}
	}
	return nil
}

func (bl *builder) powerLevels(r, side int) map[string]any {
	a, b := bl.sides[0], bl.sides[1]
	users := make([]string, 0, len(bl.sides[side].users))
	for _, m := range bl.sides[side].users {
		users = append(users, m.c.UserID)
	}
	return powerLevels(r, side, [2]string{a.admin.c.UserID, b.admin.c.UserID}, a.mod.c.UserID, users)
}

// playRound first settles the room (mend), then runs the two servers' halves of round r at
// the same time.
func (bl *builder) playRound(ctx context.Context, r int, p round) error {
	st, err := bl.mend(ctx)
	if err != nil {
		return err
	}
	// Each half tells the other whether its kick or ban (and unban) of the other's user
	// happened, so that the other knows whether to bring them back.
	done := [2]chan bool{make(chan bool, 1), make(chan bool, 1)}
	start := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	for i := range bl.sides {
		g.Go(func() error {
			<-start
			if err := bl.playSide(gctx, r, p, i, st, done); err != nil {
				return fmt.Errorf("on %s: %w", bl.sides[i].name, err)
			}
			return nil
		})
	}
	close(start)
	return g.Wait()
}

// roomState is what both servers agree on when a round starts.
type roomState struct{ rule, history string }

// mend waits until both servers agree on the join rule, the history visibility and the
// membership of every ordinary user, and brings back (one at a time, nothing else happening)
// the users who are out. A round's own leaves and joins do not settle the membership: state
// resolution of two forks may undo a join or a kick that one fork did not know about (see
// BuildForkedRoom), so what both servers show is what counts. Only the users both show
// joined send messages in the round: a message of a user one server holds out would be
// soft-failed there and the two would never show the same events.
func (bl *builder) mend(ctx context.Context) (roomState, error) {
	var st roomState
	var err error
	if st.rule, err = bl.agreed(ctx, "m.room.join_rules", "", "join_rule"); err != nil {
		return st, err
	}
	if st.history, err = bl.agreed(ctx, "m.room.history_visibility", "", "history_visibility"); err != nil {
		return st, err
	}
	for _, s := range bl.sides {
		for _, m := range s.users {
			ms, err := bl.agreed(ctx, "m.room.member", m.c.UserID, "membership")
			if err != nil {
				return st, err
			}
			if ms != "join" {
				bl.mu.Lock()
				bl.mended++
				bl.mu.Unlock()
				if err := bl.bringBack(ctx, m, ms, s.admin, st.rule); err != nil {
					return st, err
				}
				if ms, err = bl.agreed(ctx, "m.room.member", m.c.UserID, "membership"); err != nil {
					return st, err
				}
			}
			bl.setJoined(m, ms == "join")
		}
	}
	return st, nil
}

// playSide is server i's half of round r: half of its messages, the round's change, the
// other half, then what depends on the other server's change.
func (bl *builder) playSide(ctx context.Context, r int, p round, i int, st roomState, done [2]chan bool) error {
	me, other := bl.sides[i], bl.sides[1-i]
	target := me.users[p.Target[i]]      // our user the round is about
	victim := other.users[p.Target[1-i]] // the other server's user we kick or ban
	// The target sends nothing this round: a message of a user the other server has just
	// kicked would be accepted here and soft-failed there.
	skip := target
	if p.Action == actTopic || p.Action == actPower || (p.Action == actRules && p.Toggler != i) {
		skip = nil
	}
	first := bl.o.MessagesPerRound / 2
	if err := bl.messages(ctx, r, me, first, skip); err != nil {
		return err
	}
	switch p.Action {
	case actTopic:
		setter := me.admin
		if me.mod != nil {
			setter = me.mod
		}
		err := bl.putState(ctx, setter, "m.room.topic", map[string]string{
			"topic": fmt.Sprintf("round %d, set on %s", r, me.name)})
		if err := bl.note("topic", err); err != nil {
			return err
		}
	case actPower:
		// One admin a round, in turn: conflicting power levels are where Dendrite v0.13.8
		// departs from the spec (its resolver checks them against no power levels at all,
		// see the state oracle test), and two at once would only make more of them.
		if i != r%2 {
			break
		}
		// r+1: round 0 must not repeat the content set at the start.
		err := bl.putState(ctx, me.admin, "m.room.power_levels", bl.powerLevels(r+1, i))
		if err := bl.note("power_levels", err); err != nil {
			return err
		}
	case actLeave:
		if bl.isJoined(target) {
			if err := bl.leaveAndRejoin(ctx, target, me.admin, st.rule); err != nil {
				return err
			}
		}
	case actKick, actBan:
		removed := false
		if bl.isJoined(victim) {
			var err error
			if removed, err = bl.remove(ctx, r, p.Action, me.admin, victim); err != nil {
				return err
			}
		}
		done[1-i] <- removed
	case actRules:
		if p.Toggler == i {
			rule := nextJoinRule(st.rule)
			err := bl.putState(ctx, me.admin, "m.room.join_rules", map[string]string{"join_rule": rule})
			if err := bl.note("join_rules", err); err != nil {
				return err
			}
			// Under the new rule: invited first when it is invite.
			if err == nil && bl.isJoined(target) {
				if err := bl.leaveAndRejoin(ctx, target, me.admin, rule); err != nil {
					return err
				}
			}
		} else {
			err := bl.putState(ctx, me.admin, "m.room.history_visibility",
				map[string]string{"history_visibility": nextHistory(st.history)})
			if err := bl.note("history_visibility", err); err != nil {
				return err
			}
		}
	}
	if err := bl.messages(ctx, r, me, bl.o.MessagesPerRound-first, skip); err != nil {
		return err
	}
	if p.Action != actKick && p.Action != actBan {
		return nil
	}
	var removed bool
	select {
	case removed = <-done[i]:
	case <-ctx.Done():
		return ctx.Err()
	}
	if !removed {
		return nil
	}
	// Bring the target back once both servers show them out: a join made before would be a
	// second join of a joined user on one side. State resolution may have undone the removal
	// (both show them joined), or the servers may still differ: then the next round's mend
	// sees to them.
	ms, ok, err := bl.agree(ctx, "m.room.member", target.c.UserID, "membership")
	if err != nil || !ok {
		return err
	}
	if ms == "join" {
		bl.mu.Lock()
		bl.undone++
		bl.mu.Unlock()
		return nil
	}
	// Invited back, if need be, by whoever removed them, over federation (after a kick), or by
	// our own admin (after a ban).
	inviter := other.admin
	if p.Action == actBan {
		inviter = me.admin
	}
	return bl.bringBack(ctx, target, ms, inviter, st.rule)
}

// remove kicks, or bans and unbans, victim as admin; it reports whether the victim is out of
// the room (left, not banned) because of it.
func (bl *builder) remove(ctx context.Context, r int, a action, admin, victim *member) (bool, error) {
	body := map[string]string{"user_id": victim.c.UserID, "reason": fmt.Sprintf("round %d", r)}
	kind := "kick"
	if a == actBan {
		kind = "ban"
	}
	err := admin.c.do(ctx, http.MethodPost, roomPath(bl.room)+"/"+kind, body, nil)
	if err != nil {
		err = fmt.Errorf("%s %s: %w", kind, victim.c.UserID, err)
	}
	if err := bl.note(kind, err); err != nil {
		return false, err
	}
	if err != nil {
		return false, nil
	}
	bl.setJoined(victim, false)
	if a != actBan {
		return true, nil
	}
	// Unban only once both servers show the ban. With Dendrite v0.13.8, a ban and its unban
	// that reached the other server together, while that server's own fork still held the
	// user joined, have been seen to resolve to the ban there and to a later join here: the
	// two servers then never agree again.
	ms, ok, err := bl.agree(ctx, "m.room.member", victim.c.UserID, "membership")
	if err != nil || !ok || ms != "ban" {
		return false, err
	}
	return bl.unban(ctx, admin, victim)
}

func (bl *builder) unban(ctx context.Context, admin, m *member) (bool, error) {
	err := admin.c.do(ctx, http.MethodPost, roomPath(bl.room)+"/unban", map[string]string{"user_id": m.c.UserID}, nil)
	if err != nil {
		err = fmt.Errorf("unban %s: %w", m.c.UserID, err)
	}
	if err := bl.note("unban", err); err != nil {
		return false, err
	}
	return err == nil, nil
}

// leaveAndRejoin makes m leave and join again under rule, invited by inviter when it is
// invite.
func (bl *builder) leaveAndRejoin(ctx context.Context, m, inviter *member, rule string) error {
	err := m.c.do(ctx, http.MethodPost, roomPath(bl.room)+"/leave", map[string]any{}, nil)
	if err != nil {
		err = fmt.Errorf("leave as %s: %w", m.c.UserID, err)
	}
	if err := bl.note("leave", err); err != nil {
		return err
	}
	if err != nil {
		return nil
	}
	bl.setJoined(m, false)
	return bl.bringBack(ctx, m, "leave", inviter, rule)
}

// bringBack makes m, whose membership is membership (not join), join under rule: unbanned by
// inviter first when banned, invited by inviter when the rule is invite. A refused step
// leaves m out, for the next round's mend.
func (bl *builder) bringBack(ctx context.Context, m *member, membership string, inviter *member, rule string) error {
	home := bl.sides[m.side]
	if membership == "ban" {
		if ok, err := bl.unban(ctx, inviter, m); err != nil || !ok {
			return err
		}
	}
	if rule == "invite" && membership != "invite" {
		err := inviter.c.Invite(ctx, bl.room, m.c.UserID)
		if err := bl.note("invite", err); err != nil {
			return err
		}
		if err != nil {
			return nil
		}
		// Join once both servers have the invite (an invite from the other server reaches ours
		// in a transaction of its own), unless state resolution made it something else.
		ms, ok, err := bl.agree(ctx, "m.room.member", m.c.UserID, "membership")
		if err != nil || !ok || ms != "invite" {
			return err
		}
	}
	err := m.c.join(ctx, bl.room, home.via)
	if err != nil {
		err = fmt.Errorf("%s: %w", m.c.UserID, err)
	}
	return bl.note("join", err)
}

// messages sends n messages from s's joined users in turn, but skip. A refused message
// (its sender is not in the room after all) marks the sender out.
func (bl *builder) messages(ctx context.Context, r int, s *side, n int, skip *member) error {
	var senders []*member
	for _, m := range s.all {
		if m != skip && bl.isJoined(m) {
			senders = append(senders, m)
		}
	}
	if len(senders) == 0 {
		return fmt.Errorf("no user of %s is in the room to send", s.name)
	}
	for k := range n {
		m := senders[(r+k)%len(senders)]
		txn := fmt.Sprintf("fork-%d-%d", bl.run, bl.txn.Add(1))
		err := m.c.do(ctx, http.MethodPut, roomPath(bl.room)+"/send/m.room.message/"+txn, map[string]string{
			"msgtype": "m.text", "body": fmt.Sprintf("round %d, message %d from %s", r, k, m.c.UserID),
		}, nil)
		if err != nil {
			err = fmt.Errorf("message from %s: %w", m.c.UserID, err)
		}
		if err := bl.note("message", err); err != nil {
			return err
		}
		if err != nil {
			bl.setJoined(m, false)
		}
	}
	return nil
}

// note counts the outcome of a request of kind: made when err is nil, refused when the
// server refused it because of the other server's change (the build goes on); other errors
// are returned.
func (bl *builder) note(kind string, err error) error {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	switch {
	case err == nil:
		bl.made[kind]++
	case raced(err), kind == "unban" && unbanRaced(err):
		bl.refused[kind]++
		bl.logf("forked room: refused, going on: %v", err)
	default:
		return err
	}
	return nil
}

func (bl *builder) putState(ctx context.Context, m *member, typ string, content any) error {
	path := roomPath(bl.room) + "/state/" + url.PathEscape(typ) + "/"
	if err := m.c.do(ctx, http.MethodPut, path, content, nil); err != nil {
		return fmt.Errorf("%s as %s: %w", typ, m.c.UserID, err)
	}
	return nil
}

func (bl *builder) isJoined(m *member) bool {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	return bl.joined[m.c.UserID]
}

func (bl *builder) setJoined(m *member, joined bool) {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	bl.joined[m.c.UserID] = joined
}

// stateField is field of the content of the room's current state event (typ, key) as s's
// admin reads it, "" when there is none.
func (bl *builder) stateField(ctx context.Context, s *side, typ, key, field string) (string, error) {
	var content map[string]any
	path := roomPath(bl.room) + "/state/" + url.PathEscape(typ) + "/" + url.PathEscape(key)
	err := s.admin.c.do(ctx, http.MethodGet, path, nil, &content)
	var me *matrixError
	if errors.As(err, &me) && me.Status == http.StatusNotFound {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading %s %q on %s: %w", typ, key, s.name, err)
	}
	v, _ := content[field].(string)
	return v, nil
}

// fields reads field of the state event (typ, key) on both servers.
func (bl *builder) fields(ctx context.Context, typ, key, field string) ([2]string, error) {
	var got [2]string
	for i, s := range bl.sides {
		var err error
		if got[i], err = bl.stateField(ctx, s, typ, key, field); err != nil {
			return got, err
		}
	}
	return got, nil
}

// poll calls check every forkedRoomPoll until it reports done, for at most within; it
// reports whether check was done.
func poll(ctx context.Context, within time.Duration, check func() (bool, error)) (bool, error) {
	for range int(within/forkedRoomPoll) + 1 {
		if ok, err := check(); err != nil || ok {
			return ok, err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(forkedRoomPoll):
		}
	}
	return false, nil
}

// agree waits, at most forkedRoomSeen, until both servers show the same field of the state
// event (typ, key), and returns it; ok is false (and a line logged) when they still differ.
func (bl *builder) agree(ctx context.Context, typ, key, field string) (value string, ok bool, err error) {
	var got [2]string
	ok, err = poll(ctx, forkedRoomSeen, func() (bool, error) {
		var err error
		got, err = bl.fields(ctx, typ, key, field)
		return err == nil && got[0] == got[1], err
	})
	if err == nil && !ok {
		bl.logf("forked room: %s %q is %q on %s and %q on %s after %v", typ, key,
			got[0], bl.sides[0].name, got[1], bl.sides[1].name, forkedRoomSeen)
	}
	return got[0], ok, err
}

// agreed is agree for a caller that cannot go on while the servers differ.
func (bl *builder) agreed(ctx context.Context, typ, key, field string) (string, error) {
	v, ok, err := bl.agree(ctx, typ, key, field)
	if err == nil && !ok {
		err = fmt.Errorf("%s %q: the servers still differ after %v", typ, key, forkedRoomSeen)
	}
	return v, err
}

// settle waits, bounded, until both servers' client APIs (read by their admins) show the same
// events, and returns how many.
func (bl *builder) settle(ctx context.Context) (int, error) {
	t0 := time.Now()
	deadline := t0.Add(forkedRoomSettle)
	var onlyA, onlyB []string
	var n [2]int
	for attempt := 0; attempt < int(forkedRoomSettle/time.Second)+1; attempt++ {
		var ids [2]map[string]string // event ID → type
		for i, s := range bl.sides {
			events, err := s.admin.c.listEvents(ctx, bl.room)
			if err != nil {
				return 0, fmt.Errorf("events on %s: %w", s.name, err)
			}
			ids[i] = make(map[string]string, len(events))
			for _, e := range events {
				ids[i][e.EventID] = e.Type
			}
			n[i] = len(events)
		}
		onlyA, onlyB = missingFrom(ids[0], ids[1]), missingFrom(ids[1], ids[0])
		if len(onlyA) == 0 && len(onlyB) == 0 {
			bl.logf("forked room: both servers show the same %d events (after %v)", n[0], time.Since(t0).Round(time.Millisecond))
			return n[0], nil
		}
		if attempt%10 == 0 {
			bl.logf("forked room: %d events on %s, %d on %s; %d only on the first, %d only on the second",
				n[0], bl.sides[0].name, n[1], bl.sides[1].name, len(onlyA), len(onlyB))
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return 0, fmt.Errorf("after %v, %s shows %d events and %s %d: only on the first %s; only on the second %s",
		forkedRoomSettle, bl.sides[0].name, n[0], bl.sides[1].name, n[1], sample(onlyA), sample(onlyB))
}

// missingFrom lists "ID (type)" of the events of have that other lacks, sorted.
func missingFrom(have, other map[string]string) []string {
	var out []string
	for id, typ := range have {
		if _, ok := other[id]; !ok {
			out = append(out, id+" ("+typ+")")
		}
	}
	sort.Strings(out)
	return out
}

// sample is the first few of list, for an error message.
func sample(list []string) string {
	const most = 5
	if len(list) > most {
		return fmt.Sprintf("%s and %d more", strings.Join(list[:most], ", "), len(list)-most)
	}
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

// RoomEvent is one event of a room as a client API shows it, reduced to what checks of a
// room's history read.
type RoomEvent struct {
	EventID, Type, Sender string
	// StateKey is nil for a message.
	StateKey *string
	// Membership is content.membership of an m.room.member event.
	Membership string
}

type roomEventJSON struct {
	EventID  string  `json:"event_id"`
	Type     string  `json:"type"`
	Sender   string  `json:"sender"`
	StateKey *string `json:"state_key"`
	Content  struct {
		Membership string `json:"membership"`
	} `json:"content"`
}

func (e roomEventJSON) roomEvent() RoomEvent {
	return RoomEvent{EventID: e.EventID, Type: e.Type, Sender: e.Sender, StateKey: e.StateKey, Membership: e.Content.Membership}
}

// StateEvents is the room's current state as the Dendrite's client API shows it to user
// (DefaultUser when empty), who must be in the room (GET /rooms/{room}/state).
func (p *Peer) StateEvents(ctx context.Context, room, user string) ([]RoomEvent, error) {
	c, err := p.Login(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("state of %s on %s: %w", room, p.Dir, err)
	}
	var raw []roomEventJSON
	if err := c.do(ctx, http.MethodGet, roomPath(room)+"/state", nil, &raw); err != nil {
		return nil, fmt.Errorf("state of %s on %s: %w", room, p.Dir, err)
	}
	out := make([]RoomEvent, len(raw))
	for i, e := range raw {
		out[i] = e.roomEvent()
	}
	return out, nil
}

// Timeline is the room's history as the Dendrite's client API shows it to user (DefaultUser
// when empty), oldest first, each event once: /messages paged backwards to the start, as
// EventIDs pages it, with each event's sender and membership kept, so that a check can tell
// a kick (a leave sent by another user) or a ban from a join.
func (p *Peer) Timeline(ctx context.Context, room, user string) ([]RoomEvent, error) {
	c, err := p.Login(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("timeline of %s on %s: %w", room, p.Dir, err)
	}
	var all []RoomEvent
	seen := map[string]bool{}
	from := ""
	const maxPages = 10000
	for range maxPages {
		q := url.Values{"dir": {"b"}, "limit": {"1000"}}
		if from != "" {
			q.Set("from", from)
		}
		var resp struct {
			Chunk []roomEventJSON `json:"chunk"`
			End   string          `json:"end"`
		}
		if err := c.do(ctx, http.MethodGet, roomPath(room)+"/messages?"+q.Encode(), nil, &resp); err != nil {
			return nil, fmt.Errorf("timeline of %s on %s: %w", room, p.Dir, err)
		}
		for _, e := range resp.Chunk {
			if !seen[e.EventID] {
				seen[e.EventID] = true
				all = append(all, e.roomEvent())
			}
		}
		next := nextFrom(resp.End)
		if len(resp.Chunk) == 0 || next == "" || next == from {
			for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
				all[i], all[j] = all[j], all[i]
			}
			return all, nil
		}
		from = next
	}
	return nil, fmt.Errorf("timeline of %s on %s: /messages did not end within %d pages", room, p.Dir, maxPages)
}
