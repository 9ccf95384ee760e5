package fixturepeer

import (
	"encoding/base64"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"
	"time"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Endpoint names a served endpoint, for faults, lies and request counts.
type Endpoint string

const (
	EndpointVersion          Endpoint = "version"            // GET /_matrix/federation/v1/version
	EndpointServerKeys       Endpoint = "key/server"         // GET /_matrix/key/v2/server
	EndpointQueryKeys        Endpoint = "key/query"          // GET and POST /_matrix/key/v2/query
	EndpointBackfill         Endpoint = "backfill"           // GET /_matrix/federation/v1/backfill/{roomId}
	EndpointMissingEvents    Endpoint = "get_missing_events" // POST /_matrix/federation/v1/get_missing_events/{roomId}
	EndpointEvent            Endpoint = "event"              // GET /_matrix/federation/v1/event/{eventId}
	EndpointStateIDs         Endpoint = "state_ids"          // GET /_matrix/federation/v1/state_ids/{roomId}
	EndpointState            Endpoint = "state"              // GET /_matrix/federation/v1/state/{roomId}
	EndpointTimestampToEvent Endpoint = "timestamp_to_event" // GET /_matrix/federation/v1/timestamp_to_event/{roomId}
	EndpointMakeJoin         Endpoint = "make_join"          // GET /_matrix/federation/v1/make_join/{roomId}/{userId}
	EndpointSendJoin         Endpoint = "send_join"          // PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}
	EndpointOther            Endpoint = "other"              // anything else (404 M_UNRECOGNIZED)
)

// Endpoints lists every Endpoint.
var Endpoints = []Endpoint{
	EndpointVersion, EndpointServerKeys, EndpointQueryKeys, EndpointBackfill, EndpointMissingEvents,
	EndpointEvent, EndpointStateIDs, EndpointState, EndpointTimestampToEvent, EndpointMakeJoin,
	EndpointSendJoin, EndpointOther,
}

// FaultKind is what a Fault does instead of (or to) the real answer.
type FaultKind int

const (
	// FaultError answers Status (default 500) with errcode ErrCode (default M_UNKNOWN).
	FaultError FaultKind = iota + 1
	// FaultRateLimit answers 429 M_LIMIT_EXCEEDED with retry_after_ms = RetryAfter (default 1 s)
	// and a Retry-After header in whole seconds.
	FaultRateLimit
	// FaultHang answers nothing until the request's context ends, the peer closes, or HangFor
	// passes (default: the peer's hang limit, 10 s), then 504 if anyone still listens.
	FaultHang
	// FaultTruncate sends the real answer cut in half, with a Content-Length that matches the
	// cut: the body is invalid JSON.
	FaultTruncate
	// FaultHugeBody answers 200 with a JSON object Size bytes long (default 100 MiB), generated
	// while streaming, never allocated. Without DeclareLength it is sent chunked, so a client
	// only notices by counting; with it, Content-Length announces the size.
	FaultHugeBody
	// FaultDisconnect closes the connection without answering.
	FaultDisconnect
	// FaultManyPDUs answers 200 with Count tiny PDUs ("{}", default DefaultManyPDUs), generated
	// while streaming, never allocated: the pdus of a /backfill or /event answer (and of any
	// other endpoint), the events of a /get_missing_events answer, the state of a send_join or
	// /state answer, or at /make_join the prev_events of the template and at /state_ids the
	// pdu_ids ("$e0", "$e1", …: event IDs). Three bytes a PDU: 20 million fit in 60 MiB,
	// under any byte cap a client would set.
	FaultManyPDUs
	// FaultHugePDU answers 200 with one PDU of Size bytes (default MaxPDUBytes+1, one past
	// the spec's limit) where FaultManyPDUs puts its PDUs (at /make_join, as the template; at
	// /state_ids, one event ID string of Size bytes, quotes included), streamed.
	FaultHugePDU
)

// Defaults of the hostile faults.
const (
	// DefaultManyPDUs is FaultManyPDUs' count.
	DefaultManyPDUs = 1_000_000
	// MaxPDUBytes is the spec's limit on one PDU; FaultHugePDU sends one byte more.
	MaxPDUBytes = 65536
)

func (k FaultKind) String() string {
	switch k {
	case FaultError:
		return "error"
	case FaultRateLimit:
		return "rate-limit"
	case FaultHang:
		return "hang"
	case FaultTruncate:
		return "truncate"
	case FaultHugeBody:
		return "huge-body"
	case FaultDisconnect:
		return "disconnect"
	case FaultManyPDUs:
		return "many-pdus"
	case FaultHugePDU:
		return "huge-pdu"
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// Fault makes a peer misbehave. The first fault (in the order set) that matches a request and
// has uses left applies to it; faults apply before authentication is checked.
type Fault struct {
	Kind FaultKind
	// Endpoint limits the fault to one endpoint; "" means every endpoint.
	Endpoint Endpoint
	// Times limits the fault to the next Times matching requests; 0 means until cleared.
	Times int

	Status  int    // FaultError: HTTP status, default 500
	ErrCode string // FaultError: errcode, default M_UNKNOWN

	RetryAfter time.Duration // FaultRateLimit: default 1 s

	HangFor time.Duration // FaultHang: bound, default the peer's hang limit

	Size          int64 // FaultHugeBody: bytes, default 100 MiB; FaultHugePDU: the PDU's bytes
	DeclareLength bool  // FaultHugeBody: send Content-Length

	Count int // FaultManyPDUs: PDUs (prev_events at /make_join), default DefaultManyPDUs
}

type faultState struct {
	Fault
	used int
}

// LieKind is how a peer misrepresents an event.
type LieKind int

const (
	// LieWrongEvent serves another event's JSON (the next event of the room in generation
	// order) in place of the event: valid in itself, but not the event asked for.
	LieWrongEvent LieKind = iota + 1
	// LieForeignEvent serves, in place of the event, a valid event of another room (same
	// version, same origins; see Peer.ForeignRoom).
	LieForeignEvent
	// LieExtraForeignEvent adds one valid event of another room to every /backfill and
	// /get_missing_events answer. Lie.Events is ignored.
	LieExtraForeignEvent
	// LieStripped serves the event with its content stripped as the redaction algorithm
	// strips it, after signing, as Dendrite serves events a requester may not see: the event
	// ID and the origin's signature still verify, the content hash does not. Events whose
	// content survives redaction whole (m.room.create from v11, the initial
	// m.room.power_levels, m.room.join_rules, m.room.history_visibility) are unchanged.
	LieStripped
	// LieBadSignature serves the event with the origin's signature corrupted (still valid
	// base64 of the right length): the event ID and content hash still verify.
	LieBadSignature
	// LieBadEventID serves the event with its depth changed after signing: the event ID
	// computed from what is served is not the event's ID (and the content hash and the
	// signature fail too, as they would for any change a peer makes to another server's event).
	LieBadEventID
)

func (k LieKind) String() string {
	switch k {
	case LieWrongEvent:
		return "wrong-event"
	case LieForeignEvent:
		return "foreign-event"
	case LieExtraForeignEvent:
		return "extra-foreign-event"
	case LieStripped:
		return "stripped"
	case LieBadSignature:
		return "bad-signature"
	case LieBadEventID:
		return "bad-event-id"
	}
	return fmt.Sprintf("LieKind(%d)", int(k))
}

// Lie makes a peer misrepresent events it serves. For each event served, the first lie (in
// the order set) that matches it applies.
type Lie struct {
	Kind LieKind
	// Events limits the lie to these events; empty means every event served.
	Events []id.EventID
	// Endpoint limits the lie to one endpoint; "" means every endpoint that serves events:
	// /backfill, /get_missing_events, /event, /state (its state and auth chain), and the
	// state and auth chain of a send_join answer. /state_ids serves IDs only: no lie applies.
	Endpoint Endpoint
}

type lieState struct {
	Lie
	set EventSet
}

func newLieState(l Lie) lieState {
	ls := lieState{Lie: l}
	if len(l.Events) > 0 {
		ls.set = make(EventSet, len(l.Events))
		for _, e := range l.Events {
			ls.set[e] = struct{}{}
		}
	}
	return ls
}

func (l *lieState) applies(ep Endpoint, eventID id.EventID) bool {
	if l.Endpoint != "" && l.Endpoint != ep {
		return false
	}
	return l.set == nil || l.set.Holds(eventID)
}

// render returns the JSON the peer serves for event idx of sr through ep, lies applied.
func (p *Peer) render(ep Endpoint, r *Room, idx int32, lies []lieState) (json.RawMessage, error) {
	ev := r.Events[idx]
	for i := range lies {
		l := &lies[i]
		if l.Kind == LieExtraForeignEvent || !l.applies(ep, ev.ID) {
			continue
		}
		switch l.Kind {
		case LieWrongEvent:
			return r.Events[(int(idx)+1)%len(r.Events)].JSON, nil
		case LieForeignEvent:
			f, err := p.ForeignRoom()
			if err != nil {
				return nil, err
			}
			return f.Events[int(idx)%len(f.Events)].JSON, nil
		case LieStripped:
			return mutate(ev.JSON, func(e *pdu.PDU) { e.Redact(r.Version) })
		case LieBadSignature:
			return mutate(ev.JSON, func(e *pdu.PDU) {
				for keyID, sig := range e.Signatures[ev.Origin] {
					raw, err := base64.RawStdEncoding.DecodeString(sig)
					if err != nil || len(raw) == 0 {
						continue
					}
					raw[0] ^= 0x01
					e.Signatures[ev.Origin][keyID] = base64.RawStdEncoding.EncodeToString(raw)
				}
			})
		case LieBadEventID:
			return mutate(ev.JSON, func(e *pdu.PDU) { e.Depth++ })
		}
	}
	return ev.JSON, nil
}

// mutate parses a PDU, changes it and renders it again in canonical JSON. Hashes and
// signatures are kept as they were.
func mutate(raw json.RawMessage, change func(*pdu.PDU)) (json.RawMessage, error) {
	var e pdu.PDU
	if err := jsonv2.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("fixturepeer: parse PDU: %w", err)
	}
	change(&e)
	out, err := canonicaljson.Marshal(&e)
	if err != nil {
		return nil, fmt.Errorf("fixturepeer: marshal PDU: %w", err)
	}
	return json.RawMessage(out), nil
}
