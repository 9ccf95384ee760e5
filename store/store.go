// Package store keeps the events of Matrix rooms and the shape of each room's DAG: which events
// are held, which prev events are referenced but missing (backward extremities, the holes a
// backfill fills) and which held events nothing refers to yet (forward extremities, the newest
// events). It is the resolver's memory: every write is atomic with the extremity bookkeeping,
// so a crash or a restart resumes from exactly what was committed.
//
// Two backends share one schema and one set of queries: SQLite (modernc.org/sqlite, pure Go, a
// single file, the default) and PostgreSQL (pgx). See [Open] for the URLs.
//
// The store does not validate events: the resolver checks IDs, hashes and signatures before
// handing them over.
package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned (wrapped) when a room, event or extremity does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned (wrapped) when a write contradicts what is stored, such as a second
// room version for a room or an event ID already held in another room.
var ErrConflict = errors.New("conflict")

// Event is a PDU as the resolver accepted it.
type Event struct {
	ID             string
	RoomID         string
	Depth          int64
	OriginServerTS int64 // milliseconds since the Unix epoch, as in the PDU
	Type           string
	StateKey       *string // nil for non-state events; "" is a valid state key
	Sender         string
	Origin         string   // the server the event came from (the sender's server)
	PrevEvents     []string // as a set: the store returns them sorted, Raw keeps the PDU's order
	// Raw is the canonical JSON of the PDU as received, or of its redacted form when the full
	// copy failed its content hash.
	Raw []byte
	// Redacted says Raw is the redacted form. A redacted copy is replaced when the full copy
	// arrives; a full copy is never replaced by a redacted one.
	Redacted bool
	// Rejected is the authorization rule the event broke, as SaveState recorded it; read
	// only (InsertEvents ignores it).
	Rejected string
}

// Position is a place in a room's topological order: (depth, event ID).
type Position struct {
	Depth   int64
	EventID string
}

// Position returns where e sits in its room's topological order.
func (e Event) Position() Position { return Position{Depth: e.Depth, EventID: e.ID} }

// InsertResult counts what one InsertEvents call did with its batch:
// New + Upgraded + Duplicates is the length of the batch.
type InsertResult struct {
	New        int // events not held before
	Upgraded   int // events held only in redacted form, now held in full
	Duplicates int // events already held (in a form at least as good), or repeated in the batch
}

// Room is what the store knows about one room. Every field is read from counters kept in the
// same transactions as the events, so reading a Room costs the same for any room size.
type Room struct {
	ID            string
	Version       string // "" until known
	CreateEventID string // "" until known
	Events        int64
	Redacted      int64 // events held only in redacted form
	// MinDepth and MaxDepth are the smallest and largest depths held; both 0 when Events is 0.
	MinDepth, MaxDepth    int64
	ForwardExtremities    int64
	BackwardExtremities   int64 // unfillable ones included
	UnfillableExtremities int64
	// Rejected counts the events that broke the authorization rules (see SaveState).
	Rejected int64
	// LastSeq is the arrival number of the room's latest arrival (see SequencedEvent); 0
	// when nothing arrived.
	LastSeq int64
}

// BackwardExtremity is a prev event that held events reference but the store does not hold,
// with the bookkeeping of the attempts to fetch it.
type BackwardExtremity struct {
	EventID       string
	FirstSeen     time.Time
	Attempts      int
	LastError     string
	LastAttemptAt time.Time // zero until the first failed attempt
	// NextAttemptAt is when the resolver may try again; zero means now.
	NextAttemptAt    time.Time
	Unfillable       bool
	UnfillableReason string
	// MinChildDepth and MaxChildDepth are the depths of the held events that list this one as
	// a prev. The missing event sits below MinChildDepth, so a history bound (minDepth) can be
	// compared without loading anything.
	MinChildDepth, MaxChildDepth int64
	// MaxChildTS is the newest origin_server_ts (Unix milliseconds) of those children, for a
	// history bounded by time.
	MaxChildTS int64
}

// PeerAttempt is what one peer answered the last time it was asked for a gap (a backward
// extremity), or why it was not asked.
type PeerAttempt struct {
	Peer string
	// Endpoint is the request that was made ("backfill", "event"); "" when none was.
	Endpoint string
	// Outcome classifies the answer as the resolver's request metrics do ("ok" for an answer
	// without the event, "not_found", "forbidden", "unreachable", …), or says why the peer
	// was not asked ("backed_off").
	Outcome string
	Error   string
	At      time.Time // zero on record means now
}

// MaxPeerAttemptError bounds the error text kept per peer and gap.
const MaxPeerAttemptError = 1024

// DAGEvent is an event's place in its room's DAG, as StreamDAG gives it.
type DAGEvent struct {
	ID             string
	Depth          int64
	OriginServerTS int64
	Type           string
	StateKey       *string
	PrevEvents     []string // sorted
	// Children counts the held events that list this one as a prev.
	Children int
	Redacted bool
	Rejected string
}

// BackwardFilter selects backward extremities. The zero value selects all of them.
type BackwardFilter struct {
	// DueBy, when set, keeps those whose NextAttemptAt is not after it (time.Now() for
	// "due now"). Unfillable extremities are due again once their NextAttemptAt passes.
	DueBy time.Time
	// StaleBefore, with DueBy, also keeps those last attempted before it, whatever their
	// NextAttemptAt: an attempt made before a peer came back, or by an earlier run, says
	// nothing of what can be fetched now.
	StaleBefore time.Time
	// SkipUnfillable leaves out unfillable extremities, due or not.
	SkipUnfillable bool
	// ChildDepthAtLeast keeps those with a held child at this depth or deeper (MaxChildDepth
	// >= ChildDepthAtLeast): a history bound. 0 keeps all.
	ChildDepthAtLeast int64
	// ChildTSAtLeast keeps those with a held child sent at this time or later (MaxChildTS >=
	// ChildTSAtLeast, Unix milliseconds): a history bound by time. 0 keeps all.
	ChildTSAtLeast int64
	// Limit caps the result; 0 means no limit.
	Limit int
}

// Store is the event store. Implementations are safe for concurrent use, also by several
// processes sharing one database.
type Store interface {
	// EnsureRoom creates the room if needed and records its version and create event ID.
	// Empty arguments leave the stored values as they are; a different non-empty value than
	// the stored one is an ErrConflict.
	EnsureRoom(ctx context.Context, roomID, roomVersion, createEventID string) error
	// Room returns the room's counters, or ErrNotFound.
	Room(ctx context.Context, roomID string) (Room, error)

	// InsertEvents stores a batch of events of one room, in any order, atomically with the
	// extremity updates. Re-inserting held events changes nothing; a batch holding an event of
	// another room is rejected before anything is written. The room is created if needed.
	InsertEvents(ctx context.Context, roomID string, events []Event) (InsertResult, error)

	// HasEvents returns the subset of eventIDs that is held (only true values).
	HasEvents(ctx context.Context, eventIDs []string) (map[string]bool, error)
	// Events returns the held events among eventIDs, by ID.
	Events(ctx context.Context, eventIDs []string) (map[string]Event, error)

	// ForwardExtremities returns the room's forward extremities (held events no held event
	// lists as a prev), sorted by event ID.
	ForwardExtremities(ctx context.Context, roomID string) ([]string, error)
	// BackwardExtremities returns the room's backward extremities that pass the filter, the
	// highest MaxChildDepth first (what a backfill wants), then by event ID.
	BackwardExtremities(ctx context.Context, roomID string, filter BackwardFilter) ([]BackwardExtremity, error)
	// RecordAttemptFailure counts a failed attempt to fetch a backward extremity and schedules
	// the next one, with what each peer answered (replacing that peer's earlier answer; see
	// GapAttempts). ErrNotFound if it is no longer a backward extremity.
	RecordAttemptFailure(ctx context.Context, roomID, eventID, errText string, nextAttemptAt time.Time, peers ...PeerAttempt) error
	// MarkUnfillable records a failed attempt after which no peer is expected to have the
	// event, with the reason and the peers' answers, and schedules a retry. ErrNotFound as
	// for RecordAttemptFailure.
	MarkUnfillable(ctx context.Context, roomID, eventID, reason string, nextAttemptAt time.Time, peers ...PeerAttempt) error
	// GapAttempts returns, for each of the room's backward extremities among eventIDs, the
	// latest answer of each peer asked for it, sorted by peer. The answers go when the event
	// arrives.
	GapAttempts(ctx context.Context, roomID string, eventIDs []string) (map[string][]PeerAttempt, error)
	// ReferencingEvents returns, for each of prevIDs, up to limit held events of the room that
	// list it as a prev event, sorted: who points at a gap.
	ReferencingEvents(ctx context.Context, roomID string, prevIDs []string, limit int) (map[string][]string, error)
	// StreamDAG calls fn for each event of the room whose depth is from minDepth to maxDepth
	// (maxDepth 0: no upper bound), in topological order, a page at a time: the DAG's shape
	// without the events' JSON, each with the number of held events that list it as a prev.
	// It stops at fn's first error and returns it.
	StreamDAG(ctx context.Context, roomID string, minDepth, maxDepth int64, fn func(DAGEvent) error) error

	// EventsInDepthRange returns up to limit events of the room whose depth is from minDepth
	// to maxDepth, deepest first (by depth, then event ID, both descending): the ancestors a
	// walk back through the DAG is about to need, read in one indexed range instead of one
	// read per level. It costs what it returns, whatever the room's size.
	EventsInDepthRange(ctx context.Context, roomID string, minDepth, maxDepth int64, limit int) ([]Event, error)

	// QueryEvents returns one page of the room's events that q selects, in arrival order or
	// topologically, each with its arrival number: what an export pages through. A page
	// costs what it returns plus, for time bounds, what they skip.
	QueryEvents(ctx context.Context, roomID string, q EventQuery) ([]SequencedEvent, error)

	// StreamEvents calls fn for each event of the room in topological order, a page at a time,
	// so memory does not grow with the room. It stops at fn's first error and returns it.
	// It is not a snapshot: events inserted meanwhile may or may not be seen.
	StreamEvents(ctx context.Context, roomID string, fn func(Event) error) error

	// CheckConsistency recomputes the room's extremities and counters from its events and
	// edges and returns an error listing every difference from what the store keeps (nil when
	// there is none). It reads the whole room: for `roomsync inspect --check` and tests, not
	// for the sync loop.
	CheckConsistency(ctx context.Context, roomID string) error

	// SetMembership records what one of our users did in a room (joined, failed to join,
	// left), replacing what was recorded before.
	SetMembership(ctx context.Context, m Membership) error
	// Membership returns the recorded membership of our user in the room, or ErrNotFound.
	Membership(ctx context.Context, roomID, userID string) (Membership, error)
	// RedactedEvents returns the positions of up to limit events of the room held only in
	// redacted form, in topological order, strictly after the position after (nil: from the
	// start): what to fetch again once we may see them.
	RedactedEvents(ctx context.Context, roomID string, after *Position, limit int) ([]Position, error)

	// AllocateStateGroups reserves n new state group numbers of the room and returns the
	// first; the others follow it. Numbers are never handed out twice, even to two writers.
	AllocateStateGroups(ctx context.Context, roomID string, n int) (int64, error)
	// SaveState records, in one transaction, new state groups of the room and the state
	// before and after each of events, with the rule an event broke. An event that has its
	// state already keeps it (the computation is deterministic; a second writer's result is
	// the same), and its groups must exist: in groups, or stored before.
	SaveState(ctx context.Context, roomID string, groups []StateGroup, events []EventState) error
	// StateGroup returns one state group of the room as stored: whole, or a delta from its
	// PrevGroup. ErrNotFound when there is none.
	StateGroup(ctx context.Context, roomID string, no int64) (StateGroup, error)
	// EventStates returns the state groups and rejection of each held event of eventIDs (an
	// event whose state is not computed yet has Before 0).
	EventStates(ctx context.Context, eventIDs []string) (map[string]EventState, error)
	// SaveBoundaryState records the state after an event the store does not hold, as source
	// (a peer) said it, with the state group that holds it, in one transaction.
	SaveBoundaryState(ctx context.Context, roomID, eventID string, group StateGroup, source string) error
	// BoundaryStates returns the room's boundary states (see SaveBoundaryState), by event ID.
	BoundaryStates(ctx context.Context, roomID string) (map[string]BoundaryState, error)
	// EventsWithoutState returns up to limit events of the room whose state is not computed
	// yet, in topological order, strictly after the position after (nil: from the start).
	EventsWithoutState(ctx context.Context, roomID string, after *Position, limit int) ([]Event, error)

	// SaveServerKeys records verified server keys. A key already recorded keeps the later
	// of the two validities; a different key under an ID already recorded is ignored (key
	// IDs name keys, so a second key under one ID is a lie or a mistake).
	SaveServerKeys(ctx context.Context, keys []ServerKey) error
	// ServerKeys returns the keys recorded for a server (none is not an error).
	ServerKeys(ctx context.Context, serverName string) ([]ServerKey, error)
	// SaveServerKeyResponse records a key response a server signed itself, byte for byte.
	// One response is kept per set of verify key IDs: a later one for the same set replaces
	// it unless it is valid for less long. Beyond MaxServerKeyResponses sets for one server,
	// the least recently fetched are dropped.
	SaveServerKeyResponse(ctx context.Context, resp ServerKeyResponse) error
	// ServerKeyResponses returns the key responses recorded for a server, the longest valid
	// first (none is not an error).
	ServerKeyResponses(ctx context.Context, serverName string) ([]ServerKeyResponse, error)

	// Close releases the database connections.
	Close() error
}

// MaxServerKeyResponses bounds the key responses kept per server (see SaveServerKeyResponse):
// a server rotates its key rarely, and one that rotates on every fetch must not fill the store.
const MaxServerKeyResponses = 16

// ServerKeyResponse is a server's answer to GET /_matrix/key/v2/server as the resolver
// checked it (signed by the server itself, received over verified TLS), kept so that we can
// serve it as a notary when the server is gone. Raw is the answer as the server signed it.
type ServerKeyResponse struct {
	ServerName string
	// KeyIDs are the IDs of its verify_keys: the set that tells one response from another.
	KeyIDs     []string
	Raw        []byte
	ValidUntil time.Time // its valid_until_ts
	FetchedAt  time.Time // when we received it; zero on save means now
}

// ServerKey is a server's verify key as the resolver checked it (self-signed by the server,
// fetched from it or from a notary).
type ServerKey struct {
	ServerName string
	KeyID      string // e.g. ed25519:abc
	Key        string // unpadded base64, as in verify_keys
	ValidUntil time.Time
}
