package fixturepeer

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Defaults of a peer's caps and limits.
const (
	// DefaultBackfillCap is the most events one /backfill answer holds (Synapse's cap; Dendrite
	// has the same).
	DefaultBackfillCap = 100
	// DefaultMissingEventsCap is the most events one /get_missing_events answer holds
	// (Synapse's cap).
	DefaultMissingEventsCap = 20
	// DefaultMakeJoinPrevEvents is the most prev_events in a make_join template.
	DefaultMakeJoinPrevEvents = 10
	// DefaultHangLimit bounds FaultHang.
	DefaultHangLimit = 10 * time.Second
	// RequestLogSize is how many requests a peer remembers (see Peer.RequestLog).
	RequestLogSize = 10000
)

// Option configures a peer.
type Option func(*peerConfig)

type peerConfig struct {
	hold        Hold
	extra       []extraRoom
	serverName  string
	key         *federation.SigningKey
	backfillCap int
	gmeCap      int
	noTS        bool
	hangLimit   time.Duration
	latency     time.Duration
	faults      []Fault
	lies        []Lie
	plainHTTP   bool

	// Membership (membership.go).
	membersOnly bool
	inviteOnly  bool
	noMinDepth  bool
	joined      []string
	joinKeys    map[string]map[id.KeyID]id.SigningKey
	joinKeyFunc pdu.GetKeyFunc

	stateAfter bool // WithStateAfter (state.go)

	loose []LooseEvent // WithLooseEvents (loose.go)
}

type extraRoom struct {
	room *Room
	hold Hold
}

// WithHold sets which events of the room the peer holds (default: all).
func WithHold(h Hold) Option { return func(c *peerConfig) { c.hold = h } }

// WithRoom serves another room too, holding what h holds.
func WithRoom(r *Room, h Hold) Option {
	return func(c *peerConfig) { c.extra = append(c.extra, extraRoom{r, h}) }
}

// WithServerName sets the peer's server name (default "127.0.0.1:<port>"). Requests must
// name it as the X-Matrix destination.
func WithServerName(name string) Option { return func(c *peerConfig) { c.serverName = name } }

// WithSigningKey sets the peer's own signing key (default: a new one).
func WithSigningKey(k *federation.SigningKey) Option { return func(c *peerConfig) { c.key = k } }

// WithBackfillCap sets the most events per /backfill answer (default DefaultBackfillCap).
func WithBackfillCap(n int) Option { return func(c *peerConfig) { c.backfillCap = n } }

// WithMissingEventsCap sets the most events per /get_missing_events answer (default
// DefaultMissingEventsCap).
func WithMissingEventsCap(n int) Option { return func(c *peerConfig) { c.gmeCap = n } }

// WithoutTimestampToEvent makes /timestamp_to_event answer 404 M_UNRECOGNIZED, as Dendrite
// v0.13.8 does. See also Peer.SetTimestampToEvent.
func WithoutTimestampToEvent() Option { return func(c *peerConfig) { c.noTS = true } }

// WithHangLimit bounds FaultHang (default DefaultHangLimit).
func WithHangLimit(d time.Duration) Option { return func(c *peerConfig) { c.hangLimit = d } }

// WithLatency makes the peer wait d before it answers any request: a server far away, or one
// slow to read its database, whose requests a client can overlap.
func WithLatency(d time.Duration) Option { return func(c *peerConfig) { c.latency = d } }

// WithFaults starts the peer with these faults (see Peer.SetFaults).
func WithFaults(f ...Fault) Option { return func(c *peerConfig) { c.faults = append(c.faults, f...) } }

// WithLies starts the peer with these lies (see Peer.SetLies).
func WithLies(l ...Lie) Option { return func(c *peerConfig) { c.lies = append(c.lies, l...) } }

// WithPlainHTTP serves plain HTTP instead of TLS.
func WithPlainHTTP() Option { return func(c *peerConfig) { c.plainHTTP = true } }

// Peer is a running fixture homeserver. All methods are safe for concurrent use.
type Peer struct {
	name      string
	key       *federation.SigningKey
	srv       *httptest.Server
	primary   *servedRoom
	rooms     map[id.RoomID]*servedRoom
	order     []*servedRoom
	origins   map[string]bool
	bfCap     int
	gmeCap    int
	hangLimit time.Duration
	latency   time.Duration
	noTS      atomic.Bool

	membersOnly atomic.Bool
	inviteOnly  bool
	noMinDepth  bool
	stateAfter  bool           // /state_ids and /state answer the state after the event
	joinKey     pdu.GetKeyFunc // nil: send_join does not check signatures
	loose       map[id.EventID]json.RawMessage

	counts map[Endpoint]*atomic.Int64
	pdus   atomic.Int64

	mu      sync.Mutex
	faults  []*faultState
	lies    []lieState
	log     []Request
	logNext int

	foreignOnce sync.Once
	foreign     *Room
	foreignErr  error

	closed    chan struct{}
	closeOnce sync.Once
}

type servedRoom struct {
	room *Room
	hold atomic.Pointer[holdState]

	mu     sync.Mutex
	joined map[string]bool // servers joined through this peer (see membership.go)
	// invited are the users Peer.Invite invited; WithInviteOnly lets only them join.
	invited map[id.UserID]bool
}

// Request is one request a peer received.
type Request struct {
	Time        time.Time
	Endpoint    Endpoint
	Method      string
	URI         string
	Origin      string // X-Matrix origin, if any
	ContentType string
	Body        []byte // the first 4 KiB of a request body
	Status      int    // 0 if the connection was dropped
}

// Start starts a peer serving room and closes it when tb's test ends. It fails tb on error.
func Start(tb testing.TB, room *Room, opts ...Option) *Peer {
	tb.Helper()
	p, err := New(room, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// New starts a peer serving room. The caller must Close it.
func New(room *Room, opts ...Option) (*Peer, error) {
	if room == nil {
		return nil, errors.New("fixturepeer: nil room")
	}
	cfg := peerConfig{backfillCap: DefaultBackfillCap, gmeCap: DefaultMissingEventsCap, hangLimit: DefaultHangLimit}
	for _, o := range opts {
		o(&cfg)
	}
	p := &Peer{
		key:       cfg.key,
		rooms:     make(map[id.RoomID]*servedRoom),
		origins:   make(map[string]bool),
		bfCap:     cfg.backfillCap,
		gmeCap:    cfg.gmeCap,
		hangLimit: cfg.hangLimit,
		latency:   cfg.latency,
		counts:    make(map[Endpoint]*atomic.Int64, len(Endpoints)),
		closed:    make(chan struct{}),
	}
	if p.key == nil {
		p.key = federation.GenerateSigningKey()
	}
	p.noTS.Store(cfg.noTS)
	for _, ep := range Endpoints {
		p.counts[ep] = new(atomic.Int64)
	}
	add := func(r *Room, h Hold) error {
		if r == nil {
			return errors.New("fixturepeer: nil room")
		}
		if _, dup := p.rooms[r.ID]; dup {
			return fmt.Errorf("fixturepeer: room %s served twice", r.ID)
		}
		sr := &servedRoom{room: r, joined: make(map[string]bool), invited: make(map[id.UserID]bool)}
		sr.hold.Store(newHoldState(r, h))
		p.rooms[r.ID] = sr
		p.order = append(p.order, sr)
		for _, o := range r.Options.Origins {
			p.origins[o] = true
		}
		return nil
	}
	if err := add(room, cfg.hold); err != nil {
		return nil, err
	}
	p.primary = p.order[0]
	for _, s := range cfg.joined {
		p.primary.joined[s] = true
	}
	p.membersOnly.Store(cfg.membersOnly)
	p.inviteOnly = cfg.inviteOnly
	p.noMinDepth = cfg.noMinDepth
	p.stateAfter = cfg.stateAfter
	p.joinKey = cfg.joinKeyGetter()
	p.loose = make(map[id.EventID]json.RawMessage, len(cfg.loose))
	for _, e := range cfg.loose {
		p.loose[e.ID] = e.Raw
	}
	for _, x := range cfg.extra {
		if err := add(x.room, x.hold); err != nil {
			return nil, err
		}
	}
	p.SetFaults(cfg.faults...)
	p.SetLies(cfg.lies...)

	p.srv = httptest.NewUnstartedServer(p.routes())
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.name = cfg.serverName
	if p.name == "" {
		p.name = p.srv.Listener.Addr().String()
	}
	if cfg.plainHTTP {
		p.srv.Start()
	} else {
		p.srv.StartTLS()
	}
	return p, nil
}

// Close stops the peer. Hanging requests end at once.
func (p *Peer) Close() {
	p.closeOnce.Do(func() {
		close(p.closed)
		p.srv.CloseClientConnections()
		p.srv.Close()
	})
}

// ServerName is the peer's server name.
func (p *Peer) ServerName() string { return p.name }

// URL is the peer's base URL, "https://127.0.0.1:<port>" (self-signed certificate).
func (p *Peer) URL() string { return p.srv.URL }

// Key is the peer's own signing key.
func (p *Peer) Key() *federation.SigningKey { return p.key }

// Room is the room the peer was started with.
func (p *Peer) Room() *Room { return p.primary.room }

// SetHold changes which events of the peer's (first) room it holds.
func (p *Peer) SetHold(h Hold) { p.primary.hold.Store(newHoldState(p.primary.room, h)) }

// SetRoomHold changes which events of a room the peer holds.
func (p *Peer) SetRoomHold(roomID id.RoomID, h Hold) error {
	sr, ok := p.rooms[roomID]
	if !ok {
		return fmt.Errorf("fixturepeer: peer %s does not serve %s", p.name, roomID)
	}
	sr.hold.Store(newHoldState(sr.room, h))
	return nil
}

// Holds reports whether the peer holds the event (in any room it serves).
func (p *Peer) Holds(eventID id.EventID) bool {
	for _, sr := range p.order {
		if _, ok := sr.hold.Load().has(eventID); ok {
			return true
		}
	}
	return false
}

// HeldIDs returns the IDs of the events the peer holds of its (first) room.
func (p *Peer) HeldIDs() EventSet {
	hs := p.primary.hold.Load()
	s := make(EventSet, hs.count)
	for i, h := range hs.held {
		if h {
			s[hs.room.Events[i].ID] = struct{}{}
		}
	}
	return s
}

// Heads returns the peer's forward extremities in its (first) room: the held events that no
// held event references, newest (deepest) first. make_join's prev_events are the first 10.
func (p *Peer) Heads() []id.EventID {
	hs := p.primary.hold.Load()
	return hs.room.ids(hs.forwardExtremities())
}

// Latest returns what /timestamp_to_event?dir=b&ts=now answers: the held event of the
// (first) room with the greatest origin_server_ts; "" if the peer holds nothing.
func (p *Peer) Latest() id.EventID {
	hs := p.primary.hold.Load()
	if i := hs.byTimestamp(time.Now().UnixMilli(), false); i >= 0 {
		return hs.room.Events[i].ID
	}
	return ""
}

// SetTimestampToEvent turns /timestamp_to_event on (the default) or off (404 M_UNRECOGNIZED,
// as Dendrite v0.13.8).
func (p *Peer) SetTimestampToEvent(on bool) { p.noTS.Store(!on) }

// SetFaults replaces the peer's faults. No arguments clears them.
func (p *Peer) SetFaults(f ...Fault) {
	states := make([]*faultState, len(f))
	for i := range f {
		states[i] = &faultState{Fault: f[i]}
	}
	p.mu.Lock()
	p.faults = states
	p.mu.Unlock()
}

// AddFault adds a fault after the existing ones.
func (p *Peer) AddFault(f Fault) {
	p.mu.Lock()
	p.faults = append(slices.Clip(p.faults), &faultState{Fault: f})
	p.mu.Unlock()
}

// ClearFaults removes every fault.
func (p *Peer) ClearFaults() { p.SetFaults() }

// SetLies replaces the peer's lies. No arguments clears them.
func (p *Peer) SetLies(l ...Lie) {
	states := make([]lieState, len(l))
	for i := range l {
		states[i] = newLieState(l[i])
	}
	p.mu.Lock()
	p.lies = states
	p.mu.Unlock()
}

// AddLie adds a lie after the existing ones.
func (p *Peer) AddLie(l Lie) {
	p.mu.Lock()
	p.lies = append(slices.Clip(p.lies), newLieState(l))
	p.mu.Unlock()
}

// ClearLies removes every lie.
func (p *Peer) ClearLies() { p.SetLies() }

// ForeignRoom is the room whose events LieForeignEvent and LieExtraForeignEvent serve: 20
// valid events of another room with the same version and origins.
func (p *Peer) ForeignRoom() (*Room, error) {
	p.foreignOnce.Do(func() {
		o := p.primary.room.Options
		p.foreign, p.foreignErr = Generate(RoomOptions{
			Seed: o.Seed ^ 0xf0e1_d2c3_b4a5_9687, Events: 20, Version: o.Version, Origins: o.Origins, Linear: true,
		})
	})
	return p.foreign, p.foreignErr
}

// Count returns how many requests reached the endpoint (faulted and rejected ones included).
func (p *Peer) Count(ep Endpoint) int64 {
	if c, ok := p.counts[ep]; ok {
		return c.Load()
	}
	return 0
}

// Counts returns the request count of every endpoint that has one.
func (p *Peer) Counts() map[Endpoint]int64 {
	out := make(map[Endpoint]int64)
	for ep, c := range p.counts {
		if n := c.Load(); n > 0 {
			out[ep] = n
		}
	}
	return out
}

// TotalCount returns how many requests the peer received.
func (p *Peer) TotalCount() int64 {
	var n int64
	for _, c := range p.counts {
		n += c.Load()
	}
	return n
}

// PDUsServed returns how many PDUs the peer has sent in answers.
func (p *Peer) PDUsServed() int64 { return p.pdus.Load() }

// ResetCounts zeroes the request counts, PDUsServed and the request log.
func (p *Peer) ResetCounts() {
	for _, c := range p.counts {
		c.Store(0)
	}
	p.pdus.Store(0)
	p.mu.Lock()
	p.log, p.logNext = nil, 0
	p.mu.Unlock()
}

// RequestLog returns the last RequestLogSize requests, oldest first.
func (p *Peer) RequestLog() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.log) < RequestLogSize {
		return slices.Clone(p.log)
	}
	return append(slices.Clone(p.log[p.logNext:]), p.log[:p.logNext]...)
}

func (p *Peer) String() string { return "fixturepeer " + p.name + " at " + p.srv.URL }

// --- serving ---

type handlerFunc func(r *http.Request, lies []lieState) (status int, body any)

func (p *Peer) routes() http.Handler {
	mux := http.NewServeMux()
	fed := "/_matrix/federation/v1/"
	mux.Handle("GET "+fed+"version", p.wrap(EndpointVersion, false, p.version))
	mux.Handle("GET /_matrix/key/v2/server", p.wrap(EndpointServerKeys, false, p.serverKeys))
	mux.Handle("GET /_matrix/key/v2/server/{keyId}", p.wrap(EndpointServerKeys, false, p.serverKeys))
	mux.Handle("GET /_matrix/key/v2/query/{serverName}", p.wrap(EndpointQueryKeys, false, p.queryKeysGET))
	mux.Handle("POST /_matrix/key/v2/query", p.wrap(EndpointQueryKeys, false, p.queryKeysPOST))
	mux.Handle("GET "+fed+"backfill/{roomId}", p.wrap(EndpointBackfill, true, p.backfill))
	mux.Handle("POST "+fed+"get_missing_events/{roomId}", p.wrap(EndpointMissingEvents, true, p.missingEvents))
	mux.Handle("GET "+fed+"event/{eventId}", p.wrap(EndpointEvent, true, p.event))
	mux.Handle("GET "+fed+"state_ids/{roomId}", p.wrap(EndpointStateIDs, true, p.stateIDs))
	mux.Handle("GET "+fed+"state/{roomId}", p.wrap(EndpointState, true, p.state))
	mux.Handle("GET "+fed+"timestamp_to_event/{roomId}", p.wrap(EndpointTimestampToEvent, true, p.timestampToEvent))
	mux.Handle("GET "+fed+"make_join/{roomId}/{userId}", p.wrap(EndpointMakeJoin, true, p.makeJoin))
	mux.Handle("PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}", p.wrap(EndpointSendJoin, true, p.sendJoin))
	mux.Handle("/", p.wrap(EndpointOther, false, func(*http.Request, []lieState) (int, any) {
		return errBody(http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request")
	}))
	return mux
}

func errBody(status int, code, msg string) (int, any) {
	return status, map[string]any{"errcode": code, "error": msg}
}

// takeFault returns the fault that applies to a request to ep, using it up.
func (p *Peer) takeFault(ep Endpoint) (Fault, []lieState, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.faults {
		if (f.Endpoint == "" || f.Endpoint == ep) && (f.Times <= 0 || f.used < f.Times) {
			f.used++
			return f.Fault, p.lies, true
		}
	}
	return Fault{}, p.lies, false
}

func (p *Peer) record(rec Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.log) < RequestLogSize {
		p.log = append(p.log, rec)
		return
	}
	p.log[p.logNext] = rec
	p.logNext = (p.logNext + 1) % RequestLogSize
}

func (p *Peer) wrap(ep Endpoint, authenticate bool, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.counts[ep].Add(1)
		if p.latency > 0 {
			select {
			case <-time.After(p.latency):
			case <-r.Context().Done():
				return
			}
		}
		rec := Request{
			Time: time.Now(), Endpoint: ep, Method: r.Method, URI: r.RequestURI,
			Origin: federation.ParseXMatrixAuth(r.Header.Get("Authorization")).Origin, ContentType: r.Header.Get("Content-Type"),
		}
		if r.Body != nil && (r.Method == http.MethodPost || r.Method == http.MethodPut) {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
			if err != nil {
				rec.Status = http.StatusRequestEntityTooLarge
				p.record(rec)
				writeError(w, http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "request body too large")
				return
			}
			rec.Body = bytes.Clone(body[:min(len(body), 4096)])
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		defer func() { p.record(rec) }()

		fault, lies, faulted := p.takeFault(ep)
		if faulted {
			switch fault.Kind {
			case FaultError:
				status, code := cmp.Or(fault.Status, http.StatusInternalServerError), cmp.Or(fault.ErrCode, "M_UNKNOWN")
				rec.Status = status
				writeError(w, status, code, "fixturepeer: injected fault")
				return
			case FaultRateLimit:
				after := cmp.Or(fault.RetryAfter, time.Second)
				w.Header().Set("Retry-After", strconv.FormatInt(int64((after+time.Second-1)/time.Second), 10))
				rec.Status = http.StatusTooManyRequests
				writeJSON(w, http.StatusTooManyRequests, map[string]any{
					"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": after.Milliseconds(),
				})
				return
			case FaultHang:
				limit := cmp.Or(fault.HangFor, p.hangLimit)
				t := time.NewTimer(limit)
				defer t.Stop()
				select {
				case <-r.Context().Done():
					return
				case <-p.closed:
					return
				case <-t.C:
				}
				rec.Status = http.StatusGatewayTimeout
				writeError(w, http.StatusGatewayTimeout, "M_UNKNOWN", "fixturepeer: hung")
				return
			case FaultHugeBody:
				rec.Status = http.StatusOK
				p.writeHuge(w, cmp.Or(fault.Size, 100<<20), fault.DeclareLength)
				return
			case FaultManyPDUs:
				rec.Status = http.StatusOK
				p.writeManyPDUs(w, r, ep, cmp.Or(fault.Count, DefaultManyPDUs))
				return
			case FaultHugePDU:
				rec.Status = http.StatusOK
				p.writeHugePDU(w, r, ep, cmp.Or(fault.Size, MaxPDUBytes+1))
				return
			case FaultDisconnect:
				if hj, ok := w.(http.Hijacker); ok {
					if conn, _, err := hj.Hijack(); err == nil {
						_ = conn.Close()
						return
					}
				}
				panic(http.ErrAbortHandler)
			}
		}
		if authenticate {
			xma := federation.ParseXMatrixAuth(r.Header.Get("Authorization"))
			var msg string
			switch {
			case !strings.HasPrefix(strings.ToLower(r.Header.Get("Authorization")), "x-matrix "):
				msg = "Missing X-Matrix Authorization header"
			case xma.Origin == "" || xma.KeyID == "" || xma.Signature == "":
				msg = "X-Matrix header is missing origin, key or sig"
			case xma.Destination != p.name:
				msg = fmt.Sprintf("X-Matrix destination %q is not this server (%q)", xma.Destination, p.name)
			}
			if msg != "" {
				rec.Status = http.StatusUnauthorized
				writeError(w, http.StatusUnauthorized, "M_UNAUTHORIZED", msg)
				return
			}
		}
		status, body := h(r, lies)
		raw, ok := body.([]byte)
		if !ok {
			var err error
			if raw, err = json.Marshal(body); err != nil {
				status, body = errBody(http.StatusInternalServerError, "M_UNKNOWN", err.Error())
				raw, _ = json.Marshal(body)
			}
		}
		if faulted && fault.Kind == FaultTruncate {
			raw = raw[:len(raw)/2]
		}
		rec.Status = status
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
		w.WriteHeader(status)
		_, _ = w.Write(raw)
	})
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"errcode": code, "error": msg})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	raw, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.WriteHeader(status)
	_, _ = w.Write(raw)
}

var hugeChunk = bytes.Repeat([]byte("x"), 64<<10)

// writeHuge streams a JSON object of size bytes: a /backfill-shaped answer with a long
// padding string.
func (p *Peer) writeHuge(w http.ResponseWriter, size int64, declare bool) {
	head := fmt.Appendf(nil, `{"origin":%q,"origin_server_ts":%d,"pdus":[],"padding":"`, p.name, time.Now().UnixMilli())
	const tail = `"}`
	pad := max(size-int64(len(head))-int64(len(tail)), 0)
	w.Header().Set("Content-Type", "application/json")
	if declare {
		w.Header().Set("Content-Length", strconv.FormatInt(int64(len(head))+pad+int64(len(tail)), 10))
	}
	w.WriteHeader(http.StatusOK)
	p.writePadded(w, head, pad, tail)
}

// writePadded writes head, pad bytes of "x" and tail, stopping when the client goes away or
// the peer closes.
func (p *Peer) writePadded(w io.Writer, head []byte, pad int64, tail string) {
	if _, err := w.Write(head); err != nil {
		return
	}
	for pad > 0 {
		select {
		case <-p.closed:
			return
		default:
		}
		n := min(pad, int64(len(hugeChunk)))
		if _, err := w.Write(hugeChunk[:n]); err != nil {
			return
		}
		pad -= n
	}
	_, _ = io.WriteString(w, tail)
}

// pduEnvelope is the JSON around the PDUs of an answer at ep, where FaultManyPDUs and
// FaultHugePDU put theirs: at /make_join, around the template.
func (p *Peer) pduEnvelope(r *http.Request, ep Endpoint) (head, tail string) {
	switch ep {
	case EndpointMissingEvents:
		return `{"events":[`, `]}`
	case EndpointMakeJoin:
		version := id.RoomVersion("10")
		if sr, ok := p.rooms[id.RoomID(r.PathValue("roomId"))]; ok {
			version = sr.room.Version
		}
		return fmt.Sprintf(`{"room_version":%q,"event":`, version), `}`
	case EndpointSendJoin:
		return `{"auth_chain":[],"event":{},"members_omitted":false,"servers_in_room":[],"state":[`, `]}`
	case EndpointState:
		return `{"auth_chain":[],"pdus":[`, `]}`
	case EndpointStateIDs:
		return `{"auth_chain_ids":[],"pdu_ids":[`, `]}`
	}
	return fmt.Sprintf(`{"origin":%q,"origin_server_ts":%d,"pdus":[`, p.name, time.Now().UnixMilli()), `]}`
}

// writeManyPDUs streams an answer at ep of n "{}" PDUs, or at /make_join a template of n
// prev_events and at /state_ids n event IDs, in 64 KiB writes.
func (p *Peer) writeManyPDUs(w http.ResponseWriter, r *http.Request, ep Endpoint, n int) {
	head, tail := p.pduEnvelope(r, ep)
	elem := func(b []byte, _ int) []byte { return append(b, "{}"...) }
	eventID := func(b []byte, i int) []byte {
		b = strconv.AppendInt(append(b, `"$e`...), int64(i), 10)
		return append(b, '"')
	}
	switch ep {
	case EndpointMakeJoin:
		head += `{"type":"m.room.member","prev_events":[`
		tail = `]}` + tail
		elem = eventID
	case EndpointStateIDs:
		// pdu_ids holds strings: objects there would fail a client's decoding at once, not
		// its limits.
		elem = eventID
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	const flushAt = 64 << 10
	buf := make([]byte, 0, flushAt+64)
	buf = append(buf, head...)
	for i := range n {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = elem(buf, i)
		if len(buf) >= flushAt {
			select {
			case <-p.closed:
				return
			default:
			}
			if _, err := w.Write(buf); err != nil {
				return
			}
			buf = buf[:0]
		}
	}
	buf = append(buf, tail...)
	_, _ = w.Write(buf)
}

// writeHugePDU streams an answer at ep holding one PDU of size bytes.
func (p *Peer) writeHugePDU(w http.ResponseWriter, r *http.Request, ep Endpoint, size int64) {
	head, tail := p.pduEnvelope(r, ep)
	pduHead, pduTail := `{"type":"m.room.message","prev_events":[],"padding":"`, `"}`
	if ep == EndpointStateIDs {
		pduHead, pduTail = `"$`, `"` // an event ID, as pdu_ids holds
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	pad := max(size-int64(len(pduHead)+len(pduTail)), 0)
	p.writePadded(w, []byte(head+pduHead), pad, pduTail+tail)
}
