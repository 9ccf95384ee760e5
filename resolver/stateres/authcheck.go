package stateres

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// iterativeAuthChecks applies each event of order, in turn, to state if the authorization
// rules allow it against state as it stands by then.
func (r *resolver) iterativeAuthChecks(order []id.EventID, state StateMap) error {
	for _, evID := range order {
		evt := r.events[evID]
		if evt.InternalMeta.Rejected || evt.StateKey == nil {
			continue
		}
		err := r.authorize(evt, r.authEventsAgainst(evt, state))
		if r.loadErr != nil {
			return r.loadErr
		}
		if err == nil {
			state[stateKeyOf(evt)] = evID
		}
	}
	return nil
}

// authEventsAgainst picks the events the rules look at for evt: for each (type, state_key) the
// rules need, the one in state, or else evt's own auth event of that key. A rejected auth event
// is never used: auth events are not re-checked here, so it would let its rejection leak.
func (r *resolver) authEventsAgainst(evt *pdu.PDU, state StateMap) []*pdu.PDU {
	own := map[pdu.StateKey]*pdu.PDU{}
	for _, authID := range evt.AuthEvents {
		if ae := r.events[authID]; ae.StateKey != nil && !ae.InternalMeta.Rejected {
			own[stateKeyOf(ae)] = ae
		}
	}
	// Not nil even when empty: given nil, Authorize would check evt's own auth_events instead.
	picked := []*pdu.PDU{}
	for _, key := range evt.AuthEventSelection(r.version) {
		if evID, ok := state[key]; ok {
			picked = append(picked, r.events[evID])
		} else if ae, ok := own[key]; ok {
			picked = append(picked, ae)
		}
	}
	return picked
}

func (r *resolver) authorize(evt *pdu.PDU, authEvents []*pdu.PDU) error {
	var getKey pdu.GetKeyFunc
	if via := gjson.GetBytes(evt.Content, "join_authorised_via_users_server").Str; via != "" && evt.Type == event.StateMember.Type {
		var err error
		if evt, getKey, err = presigned(r.version, evt, id.UserID(via).Homeserver()); err != nil {
			return err
		}
	}
	return eventauth.Authorize(r.version, evt, authEvents, r.getEvents, getKey)
}

// getEvents serves Authorize's lookups (in room version 12, the create event named by the room
// ID) from what this call loaded, asking the Loader for the rest.
func (r *resolver) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	if _, err := r.fetch(ids); err != nil {
		r.loadErr = err
		return nil, err
	}
	found := make([]*pdu.PDU, 0, len(ids))
	for _, evID := range ids {
		if evt, ok := r.events[evID]; ok {
			found = append(found, evt)
		}
	}
	return found, nil
}

// Rule 5.2.1 (a join naming join_authorised_via_users_server must be signed by that user's
// server) depends on the event alone, and was checked when the event was received: an event
// failing it is rejected and never gets here. Authorize checks it again through getKey, and
// state resolution has no keys to fetch, so it gets a copy of the event signed by a key made
// for the purpose, with a getKey that returns that key.
var throwawayKey = sync.OnceValues(func() (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(err)
	}
	return pub, priv
})

func presigned(version id.RoomVersion, evt *pdu.PDU, server string) (*pdu.PDU, pdu.GetKeyFunc, error) {
	pub, priv := throwawayKey()
	signed := evt.Clone()
	signed.Signatures = nil
	if err := signed.Sign(version, server, "ed25519:stateres", priv); err != nil {
		return nil, nil, fmt.Errorf("stateres: signing a copy of %s: %w", evt.InternalMeta.EventID, err)
	}
	key := id.SigningKey(base64.RawStdEncoding.EncodeToString(pub))
	getKey := func(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
		return key, time.UnixMilli(evt.OriginServerTS), nil
	}
	return signed, getKey, nil
}
