package fixturepeer

import (
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// DefaultOrigins are the origin servers of a generated room when RoomOptions.Origins is empty.
// They are IP literals on closed loopback ports: server discovery for them needs no DNS (a
// lookup would leave the machine, and a lost UDP answer costs the resolver's 5 s timeout),
// and a client that refuses loopback, as the resolver does for discovered servers, fails at
// once; one that allows it gets "connection refused" at once.
var DefaultOrigins = []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}

// DefaultBaseTS is the start of a generated room's timeline when RoomOptions.BaseTS is zero:
// 2024-01-01T00:00:00Z. Events are 1 ms to 2 s apart.
const DefaultBaseTS int64 = 1704067200000

// Initial state: m.room.create, the creator's join, m.room.power_levels, m.room.join_rules,
// m.room.history_visibility.
const initialStateEvents = 5

// RoomOptions configure Generate. Zero values take the defaults named on each field.
type RoomOptions struct {
	// Seed makes the room: the same options give byte-identical events.
	Seed uint64
	// Events is the total number of events, the initial state (5 events) included.
	// Default 100; at least 5.
	Events int
	// Version is the room version: "1" or "2" (event IDs carried in the events, prev and auth
	// events as [ID, hashes] pairs; lies are not available for them), "10", "11" (default)
	// or "12".
	Version id.RoomVersion
	// Origins are the servers whose users send events. The creator is on the first.
	// Default DefaultOrigins. Names must be valid server names.
	Origins []string

	// Linear makes a single chain: no forks, no merges.
	Linear bool
	// ForkRate is the probability that an event is a sibling of a current branch tip (same
	// prev_events) instead of its child, opening a new branch. Default 0.05.
	ForkRate float64
	// MergeRate is the probability, while there is more than one branch, that an event merges
	// 2 or 3 of them (2 or 3 prev_events). Default 0.15.
	MergeRate float64
	// MaxBranches caps the number of open branches (forward extremities). Default 4.
	MaxBranches int
	// LinearRunRate is the probability that an event starts a linear stretch of
	// LinearRunLength events (branches are merged first, then no forks). Default 0.01.
	LinearRunRate float64
	// LinearRunLength is the length of a linear stretch. Default 150.
	LinearRunLength int
	// JoinRate is the probability that an event is the join of a new user (on the origins in
	// turn). Branches are merged before a join, so every later event descends from it.
	// Default 0.01. The first events after the initial state join one user on every other
	// origin, so every origin signs events.
	JoinRate float64
	// RenameRate is the probability that an event is a member's displayname change: a new
	// m.room.member join of an already joined user whose auth_events name the member event it
	// replaces. Superseded state is what makes an auth chain (send_join's) differ from the
	// state. Branches are merged first, as for a join. Default 0: none (and the room is the
	// same as before the option existed).
	RenameRate float64
	// Heads is the number of forward extremities the room should end with: the last 2×Heads
	// events open branches instead of merging them (room permitting: the initial state is
	// linear). Default 0: whatever the walk leaves, often 1. Ignored when Linear.
	Heads int
	// BodySize is the length in bytes of an m.room.message body. Default 48; up to 64 KiB.
	BodySize int
	// UnauthorizedRate is the probability that an event breaks the authorization rules, well
	// signed all the same: in turn a message from a user who never joined (rule 6, the sender
	// is not in the room) and a power-levels change by a member without the power (rule 8).
	// Such events stay in the DAG (later events name them as prevs) but never in the state;
	// Room.Unauthorized lists them. Default 0: none (and the room is as before the option).
	UnauthorizedRate float64
	// BaseTS is the start of the room's timeline in Unix milliseconds: the create event is
	// sent at most a day after it (a seed-chosen offset, so that room v12 rooms, whose ID is
	// the create event's hash, differ between seeds). Default DefaultBaseTS.
	BaseTS int64
}

func (o RoomOptions) withDefaults() (RoomOptions, error) {
	if o.Events == 0 {
		o.Events = 100
	}
	o.Events = max(o.Events, initialStateEvents)
	if o.Version == "" {
		o.Version = id.RoomV11
	}
	switch o.Version {
	case id.RoomV1, id.RoomV2, id.RoomV10, id.RoomV11, id.RoomV12:
	default:
		return o, fmt.Errorf("fixturepeer: room version %q not supported (1, 2, 10, 11, 12)", o.Version)
	}
	if len(o.Origins) == 0 {
		o.Origins = DefaultOrigins
	}
	o.Origins = slices.Clone(o.Origins)
	for _, name := range o.Origins {
		if _, _, ok := federation.ParseServerName(name); !ok {
			return o, fmt.Errorf("fixturepeer: invalid origin server name %q", name)
		}
	}
	if o.ForkRate == 0 {
		o.ForkRate = 0.05
	}
	if o.MergeRate == 0 {
		o.MergeRate = 0.15
	}
	if o.MaxBranches == 0 {
		o.MaxBranches = 4
	}
	if o.LinearRunRate == 0 {
		o.LinearRunRate = 0.01
	}
	if o.LinearRunLength == 0 {
		o.LinearRunLength = 150
	}
	if o.JoinRate == 0 {
		o.JoinRate = 0.01
	}
	if o.BodySize <= 0 {
		o.BodySize = 48
	}
	o.BodySize = min(o.BodySize, 64<<10)
	if o.BaseTS == 0 {
		o.BaseTS = DefaultBaseTS
	}
	if o.Linear {
		o.ForkRate, o.MaxBranches = 0, 1
	}
	return o, nil
}

// Event is one event of a generated room.
type Event struct {
	ID id.EventID
	// Index is the event's position in Room.Events (generation order, which is topological:
	// every event comes after its prev_events and auth_events).
	Index    int
	Depth    int64
	TS       int64 // origin_server_ts, strictly increasing with Index
	Type     string
	StateKey *string
	Sender   id.UserID
	// Origin is the sender's server, which signed the event.
	Origin string
	Prev   []id.EventID
	Auth   []id.EventID
	// JSON is the signed PDU in canonical JSON, as peers serve it.
	JSON json.RawMessage
}

// Room is a generated room: a DAG of signed events. It is immutable and safe to share.
type Room struct {
	ID      id.RoomID
	Version id.RoomVersion
	// Events in generation (topological) order; Events[0] is m.room.create.
	Events []*Event
	// Unauthorized are the events made to break the authorization rules (see
	// RoomOptions.UnauthorizedRate), with the rule each breaks as the spec numbers it.
	Unauthorized map[id.EventID]string
	// Options are the effective options (defaults filled in).
	Options RoomOptions

	byID map[id.EventID]int32
	prev [][]int32
	// references are how events refer to each event: its ID, with its reference hash in room
	// versions 1 and 2.
	references []pdu.V1EventReference
	heads      []int32
	members    map[id.UserID]int32
	powerIdx   int32
	rulesIdx   int32

	// The state before and after each event, computed on first use (see state.go).
	stateOnce sync.Once
	stateMemo *roomStates
}

// EventSet is a set of event IDs.
type EventSet map[id.EventID]struct{}

// Holds reports whether the set contains eventID.
func (s EventSet) Holds(eventID id.EventID) bool { _, ok := s[eventID]; return ok }

// Sorted returns the IDs in lexical order.
func (s EventSet) Sorted() []id.EventID {
	out := make([]id.EventID, 0, len(s))
	for e := range s {
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}

// Get returns the event with the given ID, or nil.
func (r *Room) Get(eventID id.EventID) *Event {
	if i, ok := r.byID[eventID]; ok {
		return r.Events[i]
	}
	return nil
}

// Has reports whether the room has the event.
func (r *Room) Has(eventID id.EventID) bool { _, ok := r.byID[eventID]; return ok }

// Create returns the m.room.create event.
func (r *Room) Create() *Event { return r.Events[0] }

// IDSet returns the IDs of all events.
func (r *Room) IDSet() EventSet {
	s := make(EventSet, len(r.Events))
	for _, e := range r.Events {
		s[e.ID] = struct{}{}
	}
	return s
}

// Heads returns the room's forward extremities: the events no event references, in
// generation order.
func (r *Room) Heads() []id.EventID { return r.ids(r.heads) }

// SortedIDs returns all event IDs ordered by (depth, event ID), the order of
// `roomsync inspect --event-ids`.
func (r *Room) SortedIDs() []id.EventID {
	evs := slices.Clone(r.Events)
	slices.SortFunc(evs, func(a, b *Event) int {
		return cmp.Or(cmp.Compare(a.Depth, b.Depth), cmp.Compare(a.ID, b.ID))
	})
	out := make([]id.EventID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

// Origins returns the room's origin server names.
func (r *Room) Origins() []string { return slices.Clone(r.Options.Origins) }

// KeyFunc returns a pdu.GetKeyFunc that knows the origins' keys (valid for a day from now),
// for verifying events with pdu.PDU.VerifySignature.
func (r *Room) KeyFunc() pdu.GetKeyFunc {
	return func(serverName string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
		k := OriginKey(serverName)
		if !slices.Contains(r.Options.Origins, serverName) || k.ID != keyID {
			return "", time.Time{}, nil
		}
		return k.Pub, time.Now().Add(24 * time.Hour), nil
	}
}

// Stats describe a room's shape.
type Stats struct {
	Events int
	// Forks counts events with two or more children.
	Forks int
	// Merges counts events with two or more prev_events.
	Merges int
	// Heads counts forward extremities.
	Heads    int
	MaxDepth int64
	// Senders counts the distinct users that sent events.
	Senders int
	// LongestRun is the longest chain of events with exactly one prev_event whose parent has
	// exactly one child.
	LongestRun int
}

// Stats computes the room's shape.
func (r *Room) Stats() Stats {
	children := make([]int32, len(r.Events))
	for i := range r.Events {
		for _, p := range r.prev[i] {
			children[p]++
		}
	}
	s := Stats{Events: len(r.Events), Heads: len(r.heads)}
	senders := make(map[id.UserID]struct{})
	run := make([]int, len(r.Events))
	for i, e := range r.Events {
		if children[i] >= 2 {
			s.Forks++
		}
		if len(r.prev[i]) >= 2 {
			s.Merges++
		}
		s.MaxDepth = max(s.MaxDepth, e.Depth)
		senders[e.Sender] = struct{}{}
		run[i] = 1
		if len(r.prev[i]) == 1 && children[r.prev[i][0]] == 1 {
			run[i] = run[r.prev[i][0]] + 1
		}
		s.LongestRun = max(s.LongestRun, run[i])
	}
	s.Senders = len(senders)
	return s
}

// refs are the events' references as room versions 1 and 2 spell them.
func (r *Room) refs(idx []int32) []pdu.V1EventReference {
	out := make([]pdu.V1EventReference, len(idx))
	for i, x := range idx {
		out[i] = r.references[x]
	}
	return out
}

// References renders prev or auth events for the room's version: IDs, or [ID, hashes] pairs
// in room versions 1 and 2.
func (r *Room) References(idx []int32) any {
	if r.Version.EventIDFormat() == id.EventIDFormatCustom {
		return r.refs(idx)
	}
	return r.ids(idx)
}

func (r *Room) ids(idx []int32) []id.EventID {
	out := make([]id.EventID, len(idx))
	for i, x := range idx {
		out[i] = r.Events[x].ID
	}
	return out
}

// OriginKey returns the signing key of an origin server. It is derived from the name, so it
// is the same in every room and every process. Do not modify it.
func OriginKey(serverName string) *federation.SigningKey {
	originKeysMu.Lock()
	defer originKeysMu.Unlock()
	if k, ok := originKeys[serverName]; ok {
		return k
	}
	seed := sha256.Sum256([]byte("roomsync fixturepeer origin signing key\x00" + serverName))
	ver := sha256.Sum256(seed[:])
	k, err := federation.ParseSynapseKey(fmt.Sprintf("ed25519 fixture_%x %s", ver[:3], base64.RawStdEncoding.EncodeToString(seed[:])))
	if err != nil {
		panic(err) // the string is well-formed by construction
	}
	originKeys[serverName] = k
	return k
}

var (
	originKeysMu sync.Mutex
	originKeys   = make(map[string]*federation.SigningKey)
)

// MustGenerate is Generate for tests: it fails tb on error.
func MustGenerate(tb testing.TB, opts RoomOptions) *Room {
	tb.Helper()
	r, err := Generate(opts)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// Generate builds a room. See RoomOptions.
func Generate(opts RoomOptions) (*Room, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	g := &generator{
		o:   o,
		rng: rand.New(rand.NewPCG(o.Seed, 0x5eed_f1c7_0e9e_e75)),
		ts:  o.BaseTS,
		room: &Room{
			Version:      o.Version,
			Options:      o,
			Events:       make([]*Event, 0, o.Events),
			byID:         make(map[id.EventID]int32, o.Events),
			prev:         make([][]int32, 0, o.Events),
			members:      make(map[id.UserID]int32),
			Unauthorized: make(map[id.EventID]string),
		},
		pdus: make([]pdu.AnyPDU, 0, o.Events),
	}
	if err := g.run(); err != nil {
		return nil, err
	}
	if err := g.sign(); err != nil {
		return nil, err
	}
	return g.room, nil
}

type generator struct {
	o    RoomOptions
	rng  *rand.Rand
	room *Room
	pdus []pdu.AnyPDU
	ts   int64

	tips      []int32 // open branches (forward extremities so far)
	lastState int32   // index of the newest state event
	users     []id.UserID
	runLeft   int
	joins     int // pending joins
	renames   int // pending displayname changes
	msgs      int
}

var loremText = func() string {
	const words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " +
		"incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud " +
		"exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat duis aute irure " +
		"dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur "
	b := make([]byte, 0, 160<<10)
	for len(b) < 140<<10 {
		b = append(b, words...)
	}
	return string(b)
}()

func (g *generator) user(i int) id.UserID {
	return id.NewUserID("user"+strconv.Itoa(i), g.o.Origins[i%len(g.o.Origins)])
}

func (g *generator) run() error {
	v := g.o.Version
	creator := g.user(0)
	g.users = append(g.users, creator)
	if !v.RoomIDIsCreateEventID() {
		g.room.ID = id.RoomID("!" + g.randomLocal(18) + ":" + g.o.Origins[0])
	}

	createContent := map[string]any{"room_version": string(v)}
	if v.CreatorInContent() {
		createContent["creator"] = creator
	}
	create, err := g.add("m.room.create", ptr(""), creator, mustJSON(createContent), nil, nil)
	if err != nil {
		return err
	}
	authBase := []int32{create}
	if v.RoomIDIsCreateEventID() {
		authBase = nil // v12: the create event is implied by the room ID
	}
	join, err := g.add("m.room.member", ptr(string(creator)), creator,
		mustJSON(map[string]any{"membership": "join", "displayname": "user0"}), []int32{create}, authBase)
	if err != nil {
		return err
	}
	g.room.members[creator] = join
	users := map[string]any{}
	if !v.PrivilegedRoomCreators() { // v12: creators have infinite power and may not be listed
		users[string(creator)] = 100
	}
	power, err := g.add("m.room.power_levels", ptr(""), creator, mustJSON(map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"events": map[string]any{"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100},
	}), []int32{join}, append(slices.Clone(authBase), join))
	if err != nil {
		return err
	}
	g.room.powerIdx = power
	full := append(slices.Clone(authBase), power, join)
	rules, err := g.add("m.room.join_rules", ptr(""), creator, mustJSON(map[string]any{"join_rule": "public"}), []int32{power}, full)
	if err != nil {
		return err
	}
	g.room.rulesIdx = rules
	hist, err := g.add("m.room.history_visibility", ptr(""), creator, mustJSON(map[string]any{"history_visibility": "world_readable"}), []int32{rules}, full)
	if err != nil {
		return err
	}
	g.tips = []int32{hist}
	g.lastState = hist
	g.joins = len(g.o.Origins) - 1

	for len(g.room.Events) < g.o.Events {
		if !g.o.Linear && g.o.Heads > 1 && g.o.Events-len(g.room.Events) <= 2*g.o.Heads {
			// Closing stretch: open branches until there are enough heads, merge none.
			ok, err := false, error(nil)
			if len(g.tips) < g.o.Heads {
				ok, err = g.fork()
			}
			if err == nil && !ok {
				err = g.extend()
			}
			if err != nil {
				return err
			}
			continue
		}
		if g.runLeft == 0 && g.rng.Float64() < g.o.LinearRunRate {
			g.runLeft = g.o.LinearRunLength
		}
		if g.joins == 0 && g.rng.Float64() < g.o.JoinRate {
			g.joins = 1
		}
		// Asked only when on, so that rooms without renames draw the same numbers as before.
		if g.o.RenameRate > 0 && g.joins == 0 && g.renames == 0 && g.rng.Float64() < g.o.RenameRate {
			g.renames = 1
		}
		var err error
		// Asked only when on, so that rooms without them draw the same numbers as before.
		unauthorized := g.o.UnauthorizedRate > 0 && g.rng.Float64() < g.o.UnauthorizedRate
		switch {
		case unauthorized:
			err = g.unauthorized()
		case len(g.tips) > 1 && (g.runLeft > 0 || g.joins > 0 || g.renames > 0 || g.rng.Float64() < g.o.MergeRate):
			err = g.merge()
		case g.joins > 0:
			err = g.joinUser()
			g.joins--
		case g.renames > 0:
			err = g.renameUser()
			g.renames--
		case g.runLeft == 0 && len(g.tips) < g.o.MaxBranches && g.rng.Float64() < g.o.ForkRate:
			var ok bool
			ok, err = g.fork()
			if err == nil && !ok {
				err = g.extend()
			}
		default:
			err = g.extend()
		}
		if err != nil {
			return err
		}
		if g.runLeft > 0 {
			g.runLeft--
		}
	}
	g.room.heads = slices.Clone(g.tips)
	slices.Sort(g.room.heads)
	return nil
}

// auth returns the auth events of a message from sender.
func (g *generator) auth(sender id.UserID) []int32 {
	a := make([]int32, 0, 3)
	if !g.o.Version.RoomIDIsCreateEventID() {
		a = append(a, 0)
	}
	return append(a, g.room.powerIdx, g.room.members[sender])
}

func (g *generator) message(prev []int32, what string) error {
	sender := g.users[g.rng.IntN(len(g.users))]
	g.msgs++
	body := make([]byte, 0, g.o.BodySize)
	body = fmt.Appendf(body, "%s %d from %s: ", what, g.msgs, sender.Localpart())
	if len(body) < g.o.BodySize {
		off := g.rng.IntN(len(loremText) - g.o.BodySize)
		body = append(body, loremText[off:off+g.o.BodySize-len(body)]...)
	}
	content, err := json.Marshal(struct {
		MsgType string `json:"msgtype"`
		Body    string `json:"body"`
	}{"m.text", string(body)})
	if err != nil {
		return err
	}
	_, err = g.add("m.room.message", nil, sender, content, prev, g.auth(sender))
	return err
}

// extend makes a child of a random branch tip.
func (g *generator) extend() error {
	k := g.rng.IntN(len(g.tips))
	if err := g.message([]int32{g.tips[k]}, "message"); err != nil {
		return err
	}
	g.tips[k] = int32(len(g.room.Events) - 1)
	return nil
}

// fork makes a sibling of a random branch tip (same prev_events), opening a branch. Only tips
// newer than the newest state event are forked, so every event after a state event
// descends from it and auth_events always point at ancestors.
func (g *generator) fork() (bool, error) {
	var eligible []int32
	for _, t := range g.tips {
		if t > g.lastState && len(g.room.prev[t]) > 0 {
			eligible = append(eligible, t)
		}
	}
	if len(eligible) == 0 {
		return false, nil
	}
	t := eligible[g.rng.IntN(len(eligible))]
	if err := g.message(slices.Clone(g.room.prev[t]), "fork"); err != nil {
		return false, err
	}
	g.tips = append(g.tips, int32(len(g.room.Events)-1))
	return true, nil
}

// merge joins 2 or 3 branch tips in one event.
func (g *generator) merge() error {
	n := min(2+g.rng.IntN(2), len(g.tips))
	g.rng.Shuffle(len(g.tips), func(i, j int) { g.tips[i], g.tips[j] = g.tips[j], g.tips[i] })
	prev := slices.Clone(g.tips[:n])
	slices.Sort(prev)
	if err := g.message(prev, "merge"); err != nil {
		return err
	}
	g.tips = append(g.tips[n:], int32(len(g.room.Events)-1))
	slices.Sort(g.tips) // keep the choice of tips independent of the shuffle's leftovers
	return nil
}

// joinUser adds a user on the next origin. There is a single tip (merge runs first).
func (g *generator) joinUser() error {
	u := g.user(len(g.users))
	auth := make([]int32, 0, 3)
	if !g.o.Version.RoomIDIsCreateEventID() {
		auth = append(auth, 0)
	}
	auth = append(auth, g.room.powerIdx, g.room.rulesIdx)
	idx, err := g.add("m.room.member", ptr(string(u)), u,
		mustJSON(map[string]any{"membership": "join", "displayname": u.Localpart()}), []int32{g.tips[0]}, auth)
	if err != nil {
		return err
	}
	g.users = append(g.users, u)
	g.room.members[u] = idx
	g.tips[0] = idx
	g.lastState = idx
	return nil
}

// unauthorized makes an event that breaks the authorization rules on a random branch tip:
// a message from a stranger, or a power-levels change by a member without the power. It
// changes nothing the generator tracks, so no later event's auth events name it.
func (g *generator) unauthorized() error {
	k := g.rng.IntN(len(g.tips))
	prev := []int32{g.tips[k]}
	auth := make([]int32, 0, 3)
	if !g.o.Version.RoomIDIsCreateEventID() {
		auth = append(auth, 0)
	}
	auth = append(auth, g.room.powerIdx)
	var idx int32
	var err error
	rule := ""
	if len(g.room.Unauthorized)%2 == 0 || len(g.users) < 2 {
		stranger := id.NewUserID("stranger"+strconv.Itoa(len(g.room.Unauthorized)), g.o.Origins[len(g.room.Unauthorized)%len(g.o.Origins)])
		idx, err = g.add("m.room.message", nil, stranger, mustJSON(map[string]any{"msgtype": "m.text", "body": "not a member"}), prev, auth)
		rule = "6"
	} else {
		// users[0] is the creator, the only one with power 100.
		u := g.users[1+g.rng.IntN(len(g.users)-1)]
		idx, err = g.add("m.room.power_levels", ptr(""), u, mustJSON(map[string]any{
			"users": map[string]any{string(u): 100}, "users_default": 0, "events_default": 0, "state_default": 50,
		}), prev, append(auth, g.room.members[u]))
		rule = "8"
	}
	if err != nil {
		return err
	}
	g.room.Unauthorized[g.room.Events[idx].ID] = rule
	g.tips[k] = idx
	return nil
}

// renameUser changes a random user's displayname. There is a single tip (merge runs first).
func (g *generator) renameUser() error {
	u := g.users[g.rng.IntN(len(g.users))]
	auth := make([]int32, 0, 4)
	if !g.o.Version.RoomIDIsCreateEventID() {
		auth = append(auth, 0)
	}
	auth = append(auth, g.room.powerIdx, g.room.rulesIdx, g.room.members[u])
	idx, err := g.add("m.room.member", ptr(string(u)), u,
		mustJSON(map[string]any{"membership": "join", "displayname": u.Localpart() + " " + strconv.Itoa(len(g.room.Events))}),
		[]int32{g.tips[0]}, auth)
	if err != nil {
		return err
	}
	g.room.members[u] = idx
	g.tips[0] = idx
	g.lastState = idx
	return nil
}

// add builds an event, fills its content hash and computes its ID. Signing comes later, in
// parallel: the event ID does not depend on signatures.
func (g *generator) add(typ string, stateKey *string, sender id.UserID, content []byte, prev, auth []int32) (int32, error) {
	r := g.room
	idx := int32(len(r.Events))
	var depth int64
	for _, p := range prev {
		depth = max(depth, r.Events[p].Depth)
	}
	depth++
	if idx > 0 {
		g.ts += 1 + g.rng.Int64N(2000)
	} else {
		g.ts += g.rng.Int64N(24 * 3600 * 1000)
	}
	var p pdu.AnyPDU
	var evID id.EventID
	var ref pdu.V1EventReference
	if g.o.Version.EventIDFormat() == id.EventIDFormatCustom {
		// Room versions 1 and 2: the sender's server mints the ID, and references carry the
		// referenced event's reference hash.
		evID = id.EventID(fmt.Sprintf("$%d%s:%s", idx, g.randomLocal(12), sender.Homeserver()))
		v1 := &pdu.RoomV1PDU{
			AuthEvents:     r.refs(auth),
			Content:        jsontext.Value(content),
			Depth:          depth,
			EventID:        evID,
			OriginServerTS: g.ts,
			PrevEvents:     r.refs(prev),
			RoomID:         r.ID,
			Sender:         sender,
			StateKey:       stateKey,
			Type:           typ,
		}
		if err := v1.FillContentHash(); err != nil {
			return 0, fmt.Errorf("fixturepeer: content hash: %w", err)
		}
		hash, err := v1.GetReferenceHash(g.o.Version)
		if err != nil {
			return 0, fmt.Errorf("fixturepeer: reference hash: %w", err)
		}
		ref = pdu.V1EventReference{ID: evID, Hashes: pdu.Hashes{SHA256: hash[:]}}
		p = v1
	} else {
		v3 := &pdu.PDU{
			AuthEvents:     r.ids(auth),
			Content:        jsontext.Value(content),
			Depth:          depth,
			OriginServerTS: g.ts,
			PrevEvents:     r.ids(prev),
			RoomID:         r.ID,
			Sender:         sender,
			StateKey:       stateKey,
			Type:           typ,
		}
		if err := v3.FillContentHash(); err != nil {
			return 0, fmt.Errorf("fixturepeer: content hash: %w", err)
		}
		var err error
		if evID, err = v3.GetEventID(g.o.Version); err != nil {
			return 0, fmt.Errorf("fixturepeer: event ID: %w", err)
		}
		if typ == "m.room.create" && g.o.Version.RoomIDIsCreateEventID() {
			if r.ID, err = v3.GetRoomID(); err != nil {
				return 0, fmt.Errorf("fixturepeer: room ID: %w", err)
			}
		}
		ref = pdu.V1EventReference{ID: evID}
		p = v3
	}
	if _, dup := r.byID[evID]; dup {
		return 0, fmt.Errorf("fixturepeer: duplicate event ID %s", evID)
	}
	r.references = append(r.references, ref)
	r.Events = append(r.Events, &Event{
		ID: evID, Index: int(idx), Depth: depth, TS: g.ts, Type: typ, StateKey: stateKey,
		Sender: sender, Origin: sender.Homeserver(), Prev: r.ids(prev), Auth: r.ids(auth),
	})
	r.byID[evID] = idx
	r.prev = append(r.prev, slices.Clone(prev))
	g.pdus = append(g.pdus, p)
	return idx, nil
}

// sign signs every event with its origin's key and renders its canonical JSON, on all CPUs.
func (g *generator) sign() error {
	n := len(g.pdus)
	workers := min(runtime.GOMAXPROCS(0), max(1, n/256))
	errs := make([]error, workers)
	keys := make(map[string]*federation.SigningKey, len(g.o.Origins))
	for _, o := range g.o.Origins {
		keys[o] = OriginKey(o)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				ev := g.room.Events[i]
				k := keys[ev.Origin]
				p := g.pdus[i]
				if err := p.Sign(g.o.Version, ev.Origin, k.ID, k.Priv); err != nil {
					errs[w] = fmt.Errorf("fixturepeer: sign %s: %w", ev.ID, err)
					return
				}
				raw, err := canonicaljson.Marshal(p)
				if err != nil {
					errs[w] = fmt.Errorf("fixturepeer: marshal %s: %w", ev.ID, err)
					return
				}
				ev.JSON = json.RawMessage(raw)
			}
		})
	}
	wg.Wait()
	g.pdus = nil
	return errors.Join(errs...)
}

// randomLocal is n letters from the seeded generator, for room and event ID localparts.
func (g *generator) randomLocal(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	local := make([]byte, n)
	for i := range local {
		local[i] = letters[g.rng.IntN(len(letters))]
	}
	return string(local)
}

func ptr(s string) *string { return &s }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
