package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/store"
)

// stateReport is `inspect --state-at EVENT_ID --json`.
type stateReport struct {
	RoomID  string `json:"room_id"`
	EventID string `json:"event_id"`
	// Rejected is the authorization rule the event broke, "" when it is accepted.
	Rejected string `json:"rejected"`
	// State is the room state before the event, sorted by type and state key.
	State []stateEntry `json:"state"`
}

type stateEntry struct {
	Type     string `json:"type"`
	StateKey string `json:"state_key"`
	EventID  string `json:"event_id"`
	// Membership is the membership of an m.room.member entry.
	Membership string `json:"membership,omitempty"`
}

func printStateAt(ctx context.Context, st store.Store, roomID, eventID string, asJSON bool, stdout, stderr io.Writer) int {
	state, own, err := resolver.StateBefore(ctx, st, eventID)
	if err != nil {
		fmt.Fprintf(stderr, "roomsync inspect: %v\n", err)
		return ExitFailed
	}
	report := stateReport{RoomID: roomID, EventID: eventID, Rejected: own.Rejected, State: []stateEntry{}}
	ids := make([]string, 0, len(state))
	for k, e := range state {
		report.State = append(report.State, stateEntry{Type: k.Type, StateKey: k.StateKey, EventID: string(e)})
		ids = append(ids, string(e))
	}
	events, err := st.Events(ctx, ids)
	if err != nil {
		fmt.Fprintf(stderr, "roomsync inspect: %v\n", err)
		return ExitFailed
	}
	for i, e := range report.State {
		if e.Type == "m.room.member" {
			report.State[i].Membership = gjson.GetBytes(events[e.EventID].Raw, "content.membership").Str
		}
	}
	slices.SortFunc(report.State, func(a, b stateEntry) int {
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.StateKey, b.StateKey)
	})
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return ExitFailed
		}
		return ExitOK
	}
	if report.Rejected != "" {
		fmt.Fprintf(stdout, "# %s was rejected: %s\n", eventID, report.Rejected)
	}
	fmt.Fprintf(stdout, "# the state of %s before %s: %d entries\n", roomID, eventID, len(report.State))
	for _, e := range report.State {
		fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\n", e.Type, e.StateKey, e.EventID, e.Membership)
	}
	return ExitOK
}
