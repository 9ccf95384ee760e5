package e2e

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/roomsync/roomsync/internal/testenv"
)

// condition is a status condition as kubectl prints it.
type condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// readyOf is the Ready condition of the RoomSync name in the default namespace; the zero
// condition while it has none (or cannot be read).
func readyOf(t *testing.T, env *testenv.Env, name string) condition {
	t.Helper()
	out, err := env.Kubectl("get", "roomsync/"+name, "-o", "jsonpath={.status.conditions}")
	if err != nil || out == "" {
		return condition{}
	}
	var conds []condition
	if err := json.Unmarshal([]byte(out), &conds); err != nil {
		t.Fatalf("the conditions of %s: %v: %s", name, err, out)
	}
	for _, c := range conds {
		if c.Type == "Ready" {
			return c
		}
	}
	return condition{}
}

// waitReadyReason polls, twice a second up to timeout, until the Ready condition of the
// RoomSync name has reason, and returns it; it fails with the last one seen.
func waitReadyReason(t *testing.T, env *testenv.Env, name, reason string, timeout time.Duration) condition {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last condition
	for range int(timeout/(500*time.Millisecond)) + 1 {
		if last = readyOf(t, env, name); last.Reason == reason {
			return last
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("Ready of %s is %s/%s (%q) after %v, want reason %s", name, last.Status, last.Reason, last.Message, timeout, reason)
	return last
}
