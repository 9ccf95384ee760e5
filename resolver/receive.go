package resolver

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/store"
)

// The live path: PDUs a resident server pushes to us with /send once we joined. They are
// verified and stored as pulled events are; a PDU whose prev events we lack is followed by
// one /get_missing_events to its origin, as Dendrite does on its own live path, and what that
// leaves is a backward extremity the next sync pass backfills.

// liveGapLimit is the `limit` of a live-path /get_missing_events: Synapse serves no more.
const liveGapLimit = 20

// maxLiveGapRequests bounds the /get_missing_events of one Receive per room: a transaction
// holds at most 50 PDUs, and one request usually closes the gap for all of them.
const maxLiveGapRequests = 5

// Refusals Receive answers for a whole PDU, before verification.
const (
	errTextNotReplicated = "room not replicated here"
	errTextNoRoomID      = "PDU has no room_id: a room version 12 create event is not taken over /send"
	errTextRoomUnknown   = "room not synced here yet: its version is unknown"
	errTextStore         = "internal error storing the event"
)

// SetRooms tells the resolver which rooms it replicates: Receive takes pushed PDUs of these
// rooms only. Each call replaces the previous set.
func (r *Resolver) SetRooms(rooms []string) {
	set := make(map[string]bool, len(rooms))
	for _, room := range rooms {
		set[room] = true
	}
	r.roomsMu.Lock()
	defer r.roomsMu.Unlock()
	r.rooms = set
}

// replicates says whether roomID is one of the rooms set with SetRooms.
func (r *Resolver) replicates(roomID string) bool {
	r.roomsMu.RLock()
	defer r.roomsMu.RUnlock()
	return r.rooms[roomID]
}

// Receive takes the PDUs of a transaction that origin pushed to us (the PDUReceiver of
// federation.Server.HandleSend). Each PDU of a replicated room is verified and stored like a
// pulled one; it answers, per event ID, "" for a PDU now held (new or already held: a retried
// transaction is answered the same) and why any other was refused. A PDU that cannot be named
// gets no entry. rooms are the rooms that got new events, in the order the PDUs named them.
//
// A store failure is answered as an error for the PDUs concerned rather than failing the
// transaction: the sender would not retry them anyway once it has an answer, and the next
// sync pass pulls what is missing.
func (r *Resolver) Receive(ctx context.Context, origin string, pdus []json.RawMessage) (results map[string]string, rooms []string) {
	results = make(map[string]string, len(pdus))
	var order []string
	byRoom := map[string][]json.RawMessage{}
	for _, raw := range pdus {
		roomID := gjson.GetBytes(raw, "room_id")
		switch {
		case roomID.Type != gjson.String || roomID.Str == "":
			// Only a room version 12 create event has no room ID; it begins a room, which
			// is never pushed to a server that is not yet in it. Anything else without one
			// is not a PDU, and is not named.
			if gjson.GetBytes(raw, "type").Str == "m.room.create" {
				setResult(results, pduEventID(raw, id.RoomV12), errTextNoRoomID)
			}
		case !r.replicates(roomID.Str):
			setResult(results, r.guessEventID(ctx, roomID.Str, raw), errTextNotReplicated)
		default:
			if byRoom[roomID.Str] == nil {
				order = append(order, roomID.Str)
			}
			byRoom[roomID.Str] = append(byRoom[roomID.Str], raw)
		}
	}
	for _, roomID := range order {
		stored, err := r.receiveRoom(ctx, origin, roomID, byRoom[roomID], results)
		if err != nil {
			r.cfg.Log.Error(err, "Receiving pushed events", "room", roomID, "origin", origin)
		}
		if stored > 0 {
			rooms = append(rooms, roomID)
		}
	}
	return results, rooms
}

// receiveRoom verifies and stores the PDUs of one replicated room, fills results for them,
// then closes the gap before any whose prev events are missing. It returns how many events
// are new to the store, those of /get_missing_events included.
func (r *Resolver) receiveRoom(ctx context.Context, origin, roomID string, raws []json.RawMessage, results map[string]string) (int, error) {
	room, err := r.cfg.Store.Room(ctx, roomID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		r.refuseAll(raws, id.RoomV11, results, errTextStore)
		return 0, fmt.Errorf("read room %s: %w", roomID, err)
	}
	if room.Version == "" {
		// Without the version no PDU can be verified; the sync pass learns it.
		r.refuseAll(raws, id.RoomV11, results, errTextRoomUnknown)
		return 0, nil
	}
	// Our forward extremities before these PDUs: where a gap before them starts.
	before, err := r.cfg.Store.ForwardExtremities(ctx, roomID)
	if err != nil {
		r.refuseAll(raws, id.RoomVersion(room.Version), results, errTextStore)
		return 0, fmt.Errorf("read forward extremities of %s: %w", roomID, err)
	}

	p := r.newPass(roomID, History{})
	p.version = room.Version
	events, rejections := p.verifyAll(ctx, raws, nil)
	for _, rej := range rejections {
		setResult(results, rej.EventID, rej.Error())
	}
	p.countRejections(origin, rejections)
	if _, err := p.keep(ctx, origin, events); err != nil {
		for _, ev := range events {
			results[ev.ID] = errTextStore
		}
		return 0, err
	}
	for _, ev := range events {
		results[ev.ID] = ""
	}
	if err := p.closeLiveGaps(ctx, origin, before, events); err != nil {
		return p.res.Stored, err
	}
	// Auth events found missing here are fetched by the next sync pass.
	if _, err := p.advanceState(ctx); err != nil {
		return p.res.Stored, fmt.Errorf("compute the room state: %w", err)
	}
	return p.res.Stored, nil
}

// closeLiveGaps asks origin, with /get_missing_events, for the events between our forward
// extremities as they were (earliest) and each pushed event whose prev events are still
// missing (latest). The origin sent the event, so it holds what precedes it. A room with
// nothing stored before is left to the sync pass, which knows where to start.
func (p *pass) closeLiveGaps(ctx context.Context, origin string, earliest []string, events []store.Event) error {
	if len(earliest) == 0 {
		return nil
	}
	limit := min(p.r.cfg.Limits.MissingEventsLimit, liveGapLimit)
	asked := 0
	for _, ev := range events {
		if asked >= maxLiveGapRequests || ctx.Err() != nil {
			return nil
		}
		// Checked again for each event: an earlier answer may have brought these prevs.
		missing, err := p.missing(ctx, ev.PrevEvents)
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			continue
		}
		asked++
		raws, err := ask(ctx, p, origin, "get_missing_events", func(ctx context.Context) ([]json.RawMessage, error) {
			return p.r.cfg.Client.MissingEvents(ctx, origin, p.roomID, earliest, []string{ev.ID}, limit, 0)
		})
		if err != nil || len(raws) == 0 {
			// What stays missing is a backward extremity: the sync pass backfills it.
			continue
		}
		if _, _, err := p.accept(ctx, origin, "get_missing_events", raws, nil); err != nil {
			return err
		}
	}
	return nil
}

// refuseAll answers every PDU of raws with errText.
func (r *Resolver) refuseAll(raws []json.RawMessage, version id.RoomVersion, results map[string]string, errText string) {
	for _, raw := range raws {
		setResult(results, pduEventID(raw, version), errText)
	}
}

// guessEventID names a PDU of a room we do not replicate: with the room's version if the
// store knows the room, else as room versions 4 and later do (their IDs are all computed
// alike), or from its event_id field in versions 1 and 2.
func (r *Resolver) guessEventID(ctx context.Context, roomID string, raw []byte) string {
	version := id.RoomV11
	if room, err := r.cfg.Store.Room(ctx, roomID); err == nil && room.Version != "" {
		version = id.RoomVersion(room.Version)
	} else if gjson.GetBytes(raw, "event_id").Type == gjson.String {
		version = id.RoomV1
	}
	return pduEventID(raw, version)
}

// pduEventID is a PDU's event ID under version, or "" if it cannot be computed.
func pduEventID(raw []byte, version id.RoomVersion) string {
	if version.EventIDFormat() == id.EventIDFormatCustom {
		if v := gjson.GetBytes(raw, "event_id"); v.Type == gjson.String {
			return v.Str
		}
		return ""
	}
	var p pdu.PDU
	if err := jsonv2.Unmarshal(raw, &p); err != nil {
		return ""
	}
	eventID, err := p.GetEventID(version)
	if err != nil {
		return ""
	}
	return string(eventID)
}

// setResult records errText for a PDU that could be named; a PDU with no ID gets no entry,
// and an event already answered keeps its first answer (the same PDU twice).
func setResult(results map[string]string, eventID, errText string) {
	if eventID == "" {
		return
	}
	if _, done := results[eventID]; !done {
		results[eventID] = errText
	}
}
