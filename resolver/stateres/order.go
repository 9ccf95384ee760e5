package stateres

import (
	"cmp"
	"container/heap"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/exgjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// reverseTopologicalPowerOrder sorts events so that an event comes after the events of the set
// among its auth_events, and otherwise by sender power level (higher first), origin_server_ts,
// then event ID: Kahn's algorithm, always taking the smallest ready event.
func (r *resolver) reverseTopologicalPowerOrder(events eventSet) ([]id.EventID, error) {
	power := make(map[id.EventID]int64, len(events))
	waitingOn := make(map[id.EventID]int, len(events))
	unlocks := map[id.EventID][]id.EventID{}
	for evID := range events {
		p, err := r.senderPower(r.events[evID])
		if err != nil {
			return nil, err
		}
		power[evID] = p
		// Only the edges inside the set: the spec's DAG is the auth graph restricted to it.
		for _, authID := range r.events[evID].AuthEvents {
			if events.has(authID) {
				waitingOn[evID]++
				unlocks[authID] = append(unlocks[authID], evID)
			}
		}
	}
	ready := &idHeap{less: func(a, b id.EventID) bool {
		return cmp.Or(
			cmp.Compare(power[b], power[a]),
			cmp.Compare(r.events[a].OriginServerTS, r.events[b].OriginServerTS),
			cmp.Compare(a, b),
		) < 0
	}}
	for evID := range events {
		if waitingOn[evID] == 0 {
			ready.ids = append(ready.ids, evID)
		}
	}
	heap.Init(ready)
	order := make([]id.EventID, 0, len(events))
	for ready.Len() > 0 {
		evID := heap.Pop(ready).(id.EventID)
		order = append(order, evID)
		for _, next := range unlocks[evID] {
			if waitingOn[next]--; waitingOn[next] == 0 {
				heap.Push(ready, next)
			}
		}
	}
	if len(order) != len(events) {
		// Event IDs are hashes of the auth events, so a cycle means a forged or broken store.
		return nil, fmt.Errorf("stateres: auth events form a cycle")
	}
	return order, nil
}

type idHeap struct {
	ids  []id.EventID
	less func(a, b id.EventID) bool
}

func (h *idHeap) Len() int           { return len(h.ids) }
func (h *idHeap) Less(i, j int) bool { return h.less(h.ids[i], h.ids[j]) }
func (h *idHeap) Swap(i, j int)      { h.ids[i], h.ids[j] = h.ids[j], h.ids[i] }
func (h *idHeap) Push(x any)         { h.ids = append(h.ids, x.(id.EventID)) }
func (h *idHeap) Pop() any {
	last := h.ids[len(h.ids)-1]
	h.ids = h.ids[:len(h.ids)-1]
	return last
}

// senderPower is the power level of evt's sender as its own auth events put it, not as any
// resolved state does: the ordering has to be the same whatever the other branches hold.
func (r *resolver) senderPower(evt *pdu.PDU) (int64, error) {
	if r.version.PrivilegedRoomCreators() {
		create, err := r.createEvent(evt.RoomID)
		if err != nil {
			return 0, err
		}
		if isCreator(create, evt.Sender) {
			return math.MaxInt64, nil
		}
	}
	var create *pdu.PDU
	for _, authID := range evt.AuthEvents {
		ae := r.events[authID]
		if ae.StateKey == nil || *ae.StateKey != "" {
			continue
		}
		switch ae.Type {
		case event.StatePowerLevels.Type:
			return userLevel(ae.Content, evt.Sender), nil
		case event.StateCreate.Type:
			create = ae
		}
	}
	// Before the first power levels event the creator has 100 and everybody else 0 (in room
	// version 12 the creators were handled above and the create event is not an auth event).
	if create != nil && creatorOf(r.version, create) == evt.Sender {
		return 100, nil
	}
	return 0, nil
}

// createEvent returns the create event of a room version 12 room, whose ID is the room ID.
func (r *resolver) createEvent(roomID id.RoomID) (*pdu.PDU, error) {
	if !strings.HasPrefix(string(roomID), "!") {
		return nil, fmt.Errorf("stateres: room ID %q is not a create event ID", roomID)
	}
	createID := id.EventID("$" + roomID[1:])
	if err := r.require([]id.EventID{createID}); err != nil {
		return nil, err
	}
	return r.events[createID], nil
}

func isCreator(create *pdu.PDU, user id.UserID) bool {
	if create.Sender == user {
		return true
	}
	for _, extra := range gjson.GetBytes(create.Content, "additional_creators").Array() {
		if extra.Str == user.String() {
			return true
		}
	}
	return false
}

func creatorOf(version id.RoomVersion, create *pdu.PDU) id.UserID {
	if version.CreatorInContent() {
		return id.UserID(gjson.GetBytes(create.Content, "creator").Str)
	}
	return create.Sender
}

// userLevel reads a user's level from power levels content. Room versions before 10 allow
// levels as strings; later versions reject such events, so accepting them everywhere is safe.
func userLevel(content []byte, user id.UserID) int64 {
	level := gjson.GetBytes(content, exgjson.Path("users", user.String()))
	if !level.Exists() {
		level = gjson.GetBytes(content, "users_default")
	}
	switch level.Type {
	case gjson.Number:
		return level.Int()
	case gjson.String:
		n, _ := strconv.ParseInt(strings.TrimSpace(level.Str), 10, 64)
		return n
	}
	return 0
}

// sortByMainline sorts events by mainline position under the power levels event pl (those
// authorized by older power levels first, those off the mainline before all), then
// origin_server_ts, then event ID. pl is empty when the partial state has no power levels.
func (r *resolver) sortByMainline(events []id.EventID, pl id.EventID) {
	const offMainline = math.MaxInt
	onMainline := map[id.EventID]int{}
	for i, p := 0, pl; p != ""; i, p = i+1, r.powerLevelsAuthEvent(p) {
		onMainline[p] = i
	}
	// Many events share power levels events, so the walk down from each one is memoized.
	memo := map[id.EventID]int{}
	var positionFrom func(p id.EventID) int
	positionFrom = func(p id.EventID) int {
		if p == "" {
			return offMainline
		}
		if i, ok := onMainline[p]; ok {
			return i
		}
		if i, ok := memo[p]; ok {
			return i
		}
		i := positionFrom(r.powerLevelsAuthEvent(p))
		memo[p] = i
		return i
	}
	position := make(map[id.EventID]int, len(events))
	for _, evID := range events {
		position[evID] = positionFrom(r.powerLevelsAuthEvent(evID))
	}
	slices.SortFunc(events, func(a, b id.EventID) int {
		return cmp.Or(
			cmp.Compare(position[b], position[a]),
			cmp.Compare(r.events[a].OriginServerTS, r.events[b].OriginServerTS),
			cmp.Compare(a, b),
		)
	})
}

// powerLevelsAuthEvent returns the power levels event among evID's auth events, if any.
func (r *resolver) powerLevelsAuthEvent(evID id.EventID) id.EventID {
	for _, authID := range r.events[evID].AuthEvents {
		ae := r.events[authID]
		if ae.Type == event.StatePowerLevels.Type && ae.StateKey != nil && *ae.StateKey == "" {
			return authID
		}
	}
	return ""
}
