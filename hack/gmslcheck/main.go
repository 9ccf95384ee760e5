// Command gmslcheck resolves a merge of room states with gomatrixserverlib, the state
// resolution that Dendrite v0.13.8 uses, for the state oracle e2e test: where roomsync's state
// and Dendrite's differ, it tells whether Dendrite's answer is its resolver's. It is a module
// of its own so that roomsync does not depend on gomatrixserverlib.
//
// Usage: gmslcheck EVENTS.jsonl ROOT.json. EVENTS.jsonl holds one {"event_id", "rejected",
// "pdu"} a line (room version 11); ROOT.json holds {"prev_states": [[event ID, …], …]}. It
// prints {"resolved": [event ID, …]}.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gmslcheck EVENTS.jsonl ROOT.json")
		os.Exit(2)
	}
	resolved, err := resolve(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "gmslcheck:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string][]string{"resolved": resolved})
}

func resolve(eventsFile, rootFile string) ([]string, error) {
	events, rejected, err := readEvents(eventsFile)
	if err != nil {
		return nil, err
	}
	var root struct {
		PrevStates [][]string `json:"prev_states"`
	}
	b, err := os.ReadFile(rootFile)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", rootFile, err)
	}
	// Each event ID, counted over the states: in every state, it is unconflicted.
	counts := map[string]int{}
	for _, state := range root.PrevStates {
		for _, id := range state {
			if events[id] == nil {
				return nil, fmt.Errorf("state event %s is not in %s", id, eventsFile)
			}
			counts[id]++
		}
	}
	var conflicted, unconflicted []gomatrixserverlib.PDU
	for id, n := range counts {
		if n == len(root.PrevStates) {
			unconflicted = append(unconflicted, events[id])
		} else {
			conflicted = append(conflicted, events[id])
		}
	}
	// As Dendrite does: the auth chains of the conflicted events.
	auth := map[string]gomatrixserverlib.PDU{}
	var walk func(gomatrixserverlib.PDU)
	walk = func(e gomatrixserverlib.PDU) {
		for _, a := range e.AuthEventIDs() {
			if _, seen := auth[a]; !seen && events[a] != nil {
				auth[a] = events[a]
				walk(events[a])
			}
		}
	}
	for _, c := range conflicted {
		walk(c)
	}
	authList := make([]gomatrixserverlib.PDU, 0, len(auth))
	for _, a := range auth {
		authList = append(authList, a)
	}
	res := gomatrixserverlib.ResolveStateConflictsV2(conflicted, unconflicted, authList,
		func(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
			return spec.NewUserID(string(senderID), true)
		},
		func(eventID string) bool { return rejected[eventID] })
	out := make([]string, 0, len(res))
	for _, e := range res {
		out = append(out, e.EventID())
	}
	sort.Strings(out)
	return out, nil
}

func readEvents(path string) (map[string]gomatrixserverlib.PDU, map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	events := map[string]gomatrixserverlib.PDU{}
	rejected := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var l struct {
			EventID  string          `json:"event_id"`
			Rejected string          `json:"rejected"`
			PDU      json.RawMessage `json:"pdu"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		ev, err := verImpl.NewEventFromTrustedJSON(l.PDU, false)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: event %s: %w", path, l.EventID, err)
		}
		if ev.EventID() != l.EventID {
			return nil, nil, fmt.Errorf("%s: event %s has ID %s", path, l.EventID, ev.EventID())
		}
		events[l.EventID] = ev
		rejected[l.EventID] = l.Rejected != ""
	}
	return events, rejected, sc.Err()
}
