package resolver

import (
	"bytes"
	"context"
	"encoding/json/jsontext"
	"encoding/json/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/roomsync/roomsync/internal/fixturepeer"
	"github.com/roomsync/roomsync/store"
)

// VerifyPDU encodes a PDU once and cuts the redacted form and the content hash's input from
// that encoding (canonical.go). These tests hold it to mautrix: the forms byte for byte to
// what mautrix's pdu package encodes, and every verdict to VerifyPDU as it was when it let
// mautrix do all the work (mautrixVerifyPDU below), for the fuzz seeds, the committed corpus
// and PDUs made to reach every member redaction drops or keeps and every content rule, in
// every room version.

// TestCanonicalFormsMatchMautrix checks encodePDU's forms against mautrix's encodings.
func TestCanonicalFormsMatchMautrix(t *testing.T) {
	for _, in := range formInputs(t) {
		for _, version := range supportedRoomVersions {
			checkForms(t, id.RoomVersion(version), in.raw)
		}
	}
}

// TestVerifyPDUMatchesMautrix checks VerifyPDU's verdicts against mautrixVerifyPDU's.
func TestVerifyPDUMatchesMautrix(t *testing.T) {
	for _, in := range formInputs(t) {
		if in.made {
			checkSameVerdict(t, in.version, in.roomID, in.raw)
			continue
		}
		for _, version := range supportedRoomVersions {
			checkSameVerdict(t, version, in.roomID, in.raw)
		}
	}
}

// FuzzVerifyPDUMatchesMautrix is both tests on arbitrary PDUs.
func FuzzVerifyPDUMatchesMautrix(f *testing.F) {
	for _, in := range formInputs(f) {
		f.Add(in.version, in.roomID, in.raw)
	}
	f.Fuzz(func(t *testing.T, version, roomID string, raw []byte) {
		checkForms(t, id.RoomVersion(version), raw)
		checkSameVerdict(t, version, roomID, raw)
	})
}

func checkForms(t *testing.T, v id.RoomVersion, raw []byte) {
	t.Helper()
	if !v.IsKnown() {
		return
	}
	var p any
	var eventType string
	var content jsontext.Value
	var wantSigned func() ([]byte, error)
	var wantHash func() ([32]byte, error)
	v1 := v.EventIDFormat() == id.EventIDFormatCustom
	if v1 {
		var q pdu.RoomV1PDU
		if json.Unmarshal(raw, &q) != nil {
			return
		}
		q.Unsigned = nil
		p, eventType, content = &q, q.Type, q.Content
		wantSigned = func() ([]byte, error) { return canonicaljson.Marshal(q.Clone().RedactForSignature(v)) }
		wantHash = q.CalculateContentHash
	} else {
		var q pdu.PDU
		if json.Unmarshal(raw, &q) != nil || (q.Hashes == nil && q.FillContentHash() != nil) {
			return
		}
		q.Unsigned = nil
		p, eventType, content = &q, q.Type, q.Content
		wantSigned = func() ([]byte, error) { return canonicaljson.Marshal(q.Clone().RedactForSignature(v)) }
		wantHash = q.CalculateContentHash
	}
	forms, ok := encodePDU(p, eventType, content, v, v1)
	defer forms.release()
	full, fullErr := canonicaljson.Marshal(p)
	signed, signedErr := wantSigned()
	hash, hashErr := wantHash()
	if !ok {
		// The caller goes mautrix's way, which must then fail somewhere.
		if fullErr == nil && signedErr == nil {
			t.Fatalf("version %s: not cut, but mautrix encodes it: %s", v, raw)
		}
		return
	}
	switch {
	case fullErr != nil || !bytes.Equal(forms.full, full):
		t.Fatalf("version %s: full form\n%s\nmautrix (%v)\n%s", v, forms.full, fullErr, full)
	case signedErr != nil || !bytes.Equal(forms.signed, signed):
		t.Fatalf("version %s: redacted form\n%s\nmautrix (%v)\n%s\nof %s", v, forms.signed, signedErr, signed, raw)
	case hashErr != nil || hash != forms.contentHash:
		t.Fatalf("version %s: content hash %x, mautrix %x (%v), of %s", v, forms.contentHash, hash, hashErr, raw)
	}
}

func checkSameVerdict(t *testing.T, version, roomID string, raw []byte) {
	t.Helper()
	ctx := context.Background()
	got, gotRej := VerifyPDU(ctx, roomID, version, raw, fuzzKeys)
	want, wantRej := mautrixVerifyPDU(ctx, roomID, version, raw, fuzzKeys)
	if (gotRej == nil) != (wantRej == nil) {
		t.Fatalf("version %s: verdict %v, mautrix's %v, for %s", version, gotRej, wantRej, raw)
	}
	if gotRej != nil {
		if gotRej.Reason != wantRej.Reason || gotRej.EventID != wantRej.EventID || gotRej.Server != wantRej.Server {
			t.Fatalf("version %s: refused %+v, mautrix %+v, for %s", version, gotRej, wantRej, raw)
		}
		return
	}
	if got.ID != want.ID || !bytes.Equal(got.Raw, want.Raw) || got.Redacted != want.Redacted ||
		got.Depth != want.Depth || got.Sender != want.Sender || got.Origin != want.Origin || got.Type != want.Type ||
		!slices.Equal(got.PrevEvents, want.PrevEvents) || got.RoomID != want.RoomID || got.OriginServerTS != want.OriginServerTS {
		t.Fatalf("version %s: stored\n%+v\nmautrix\n%+v", version, got, want)
	}
}

type formInput struct {
	version, roomID string
	raw             []byte
	// made inputs are checked under their own version only (their forms under every one).
	made bool
}

// formInputs are the verify fuzz seeds, the committed FuzzVerifyPDU corpus, and PDUs made
// from them to reach the redaction rules: every member redaction drops or keeps (unknown
// ones sorting first and last, names escaped), and content for every type whose
// redaction keeps some of it, unsorted, spaced, with escapes.
func formInputs(tb testing.TB) []formInput {
	tb.Helper()
	var out []formInput
	for _, s := range verifySeeds(tb) {
		out = append(out, formInput{version: s.version, roomID: s.roomID, raw: s.raw})
	}
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzVerifyPDU", "*"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			tb.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) != 4 {
			tb.Fatalf("%s: %d lines", file, len(lines))
		}
		args := make([]string, 3)
		for i, line := range lines[1:] {
			line = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(line, "[]byte("), "string("), ")")
			if args[i], err = strconv.Unquote(line); err != nil {
				tb.Fatalf("%s: %v", file, err)
			}
		}
		out = append(out, formInput{version: args[0], roomID: args[1], raw: []byte(args[2])})
	}

	for _, version := range []string{"1", "4", "8", "9", "11", "12"} {
		out = append(out, madeFormInputs(tb, out, version)...)
	}
	return out
}

// madeFormInputs are PDUs of room version, made from a seed of the fixture's room of that
// version (or of version 11, for the versions it does not generate) and signed again by
// every origin: each content below, alone, with each of extras and with all of them, as a
// state event and without content; each also with its content changed after signing.
func madeFormInputs(tb testing.TB, seeds []formInput, version string) []formInput {
	tb.Helper()
	var base formInput
	for _, want := range []string{version, "11"} {
		for _, s := range seeds {
			sender := id.UserID(gjson.GetBytes(s.raw, "sender").Str)
			if base.raw == nil && s.version == want && gjson.GetBytes(s.raw, "type").Str == "m.room.message" &&
				slices.Contains(fuzzOrigins, sender.Homeserver()) {
				base = s
			}
		}
	}
	if base.raw == nil {
		tb.Fatalf("no message among the seeds of version %s", version)
	}
	contents := map[string]string{
		"m.room.member": `{ "displayname":"x", "membership" : "join", "join_authorised_via_users_server":"@bob:127.0.0.1:2",
			"third_party_invite":{"signed":{"token":"t","mxid":"@a:b","signatures":{}},"display_name":"d"}, "a\u0062":"\u00e9\"\\" }`,
		"m.room.create":             `{"room_version":"` + version + `","creator":"@a:b","m.federate":true,"predecessor":{"room_id":"!r:b"}}`,
		"m.room.join_rules":         `{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!r:b"}],"x":1}`,
		"m.room.power_levels":       `{"users":{"@z:b":100,"@a:b":50},"users_default":0,"events":{"m.room.name":50},"events_default":0,"state_default":50,"ban":50,"kick":50,"redact":50,"invite":0,"notifications":{"room":50}}`,
		"m.room.history_visibility": `{"history_visibility":"shared","other":[1,2,{"b":1,"a":2}]}`,
		"m.room.redaction":          `{"redacts":"$e","reason":"spam"}`,
		"m.room.aliases":            `{"aliases":["#a:b"],"x":"y"}`,
		"m.room.message":            `{"body":"with \/ and \u0041 and \ud83d\ude00","msgtype":"m.text","nested":{"z":1,"a":{"y":2,"b":3}}}`,
		"m.room.server_acl":         `{}`,
	}
	extras := []struct {
		path  string
		value any
	}{
		{"aaa", 1}, {"zzz", map[string]any{"b": 1, "a": []any{"x", true, nil}}}, {`a"b`, "quoted"}, {"é", "unicode"},
		{"redacts", "$r"}, {"msc4354_sticky", map[string]any{"duration_ms": 5}}, {"prev_state", []any{}},
		{"origin", "b"}, {"membership", "join"}, {"event_id", "$e:127.0.0.1:2"}, {"unsigned", map[string]any{"age": 5}},
	}
	var out []formInput
	add := func(raw []byte) {
		// Signed as it is, and with its content changed after signing (kept redacted).
		signed := resign(tb, id.RoomVersion(version), raw)
		out = append(out, formInput{version: version, roomID: base.roomID, raw: signed, made: true},
			formInput{version: version, roomID: base.roomID, raw: mustSet(tb, signed, "content.changed", true), made: true})
	}
	for typ, content := range contents {
		raw := mustSet(tb, base.raw, "type", typ)
		raw = mustSetRaw(tb, raw, "content", content)
		add(raw)
		all := raw
		for _, e := range extras {
			add(mustSet(tb, raw, e.path, e.value))
			all = mustSet(tb, all, e.path, e.value)
		}
		add(all)
		stateEvent := mustSet(tb, all, "state_key", "")
		add(stateEvent)
		noContent, err := sjson.DeleteBytes(stateEvent, "content")
		if err != nil {
			tb.Fatal(err)
		}
		add(noContent)
	}
	return out
}

// resign gives raw a content hash and signatures of every fixture origin for version,
// leaving the rest of its bytes as they are (unsorted, spaced).
func resign(tb testing.TB, v id.RoomVersion, raw []byte) []byte {
	tb.Helper()
	var hashes, signatures any
	if v.EventIDFormat() == id.EventIDFormatCustom {
		var p pdu.RoomV1PDU
		if json.Unmarshal(raw, &p) != nil {
			return raw
		}
		p.Hashes, p.Signatures = nil, nil
		for _, origin := range fuzzOrigins {
			key := fixturepeer.OriginKey(origin)
			if p.Sign(v, origin, key.ID, key.Priv) != nil {
				return raw
			}
		}
		hashes, signatures = p.Hashes, p.Signatures
	} else {
		var p pdu.PDU
		if json.Unmarshal(raw, &p) != nil {
			return raw
		}
		p.Hashes, p.Signatures = nil, nil
		for _, origin := range fuzzOrigins {
			key := fixturepeer.OriginKey(origin)
			if p.Sign(v, origin, key.ID, key.Priv) != nil {
				return raw
			}
		}
		hashes, signatures = p.Hashes, p.Signatures
	}
	raw = mustSetRaw(tb, raw, "hashes", string(mustMarshal(tb, hashes)))
	return mustSetRaw(tb, raw, "signatures", string(mustMarshal(tb, signatures)))
}

func mustSetRaw(tb testing.TB, raw []byte, path, value string) []byte {
	tb.Helper()
	out, err := sjson.SetRawBytes(raw, path, []byte(value))
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// mautrixVerifyPDU is VerifyPDU as it was before it encoded each PDU once (commit 29f343f):
// mautrix's pdu package does every encoding.
func mautrixVerifyPDU(ctx context.Context, roomID, roomVersion string, raw []byte, keys KeyFunc) (store.Event, *Rejection) {
	version := id.RoomVersion(roomVersion)
	// The versions refused are VerifyPDU's, which this oracle is not about: "" among them,
	// which mautrix knows (its RoomV0).
	if !slices.Contains(supportedRoomVersions, roomVersion) {
		return store.Event{}, reject(RejectUnsupportedRoom, "", "room version %q is unknown", roomVersion)
	}
	if version.EventIDFormat() == id.EventIDFormatCustom {
		return mautrixVerifyV1PDU(ctx, roomID, version, raw, keys)
	}

	var p pdu.PDU
	if err := json.Unmarshal(raw, &p); err != nil {
		return store.Event{}, reject(RejectMalformed, "", "parse PDU: %w", err)
	}
	if p.Type == "" || p.Sender == "" || p.Depth < 0 {
		return store.Event{}, reject(RejectMalformed, "", "PDU lacks type or sender, or has a negative depth")
	}
	eventID, err := p.GetEventID(version)
	if err != nil {
		return store.Event{}, reject(RejectMalformed, "", "compute event ID: %w", err)
	}
	evID := string(eventID)

	// Room ID: version 12 create events have none, their room ID is their own hash.
	if p.Type == "m.room.create" && p.StateKey != nil && *p.StateKey == "" && version.RoomIDIsCreateEventID() {
		derived, err := p.GetRoomID()
		if err != nil || string(derived) != roomID {
			return store.Event{}, reject(RejectWrongRoom, evID, "create event derives room ID %q, want %q (%v)", derived, roomID, err)
		}
	} else if string(p.RoomID) != roomID {
		return store.Event{}, reject(RejectWrongRoom, evID, "event of room %q, want %q", p.RoomID, roomID)
	}

	senderServer := p.Sender.Homeserver()
	if senderServer == "" {
		return store.Event{}, reject(RejectMalformed, evID, "sender %q has no server name", p.Sender)
	}
	servers := []string{senderServer}
	if p.Type == "m.room.member" && version.RestrictedJoins() {
		if via := gjson.GetBytes(p.Content, "join_authorised_via_users_server"); via.Exists() && gjson.GetBytes(p.Content, "membership").Str == "join" {
			if server := id.UserID(via.Str).Homeserver(); server != "" && server != senderServer {
				servers = append(servers, server)
			}
		}
	}
	if r := verifySignatures(ctx, evID, servers, keys, func(server string, getKey pdu.GetKeyFunc) error {
		return p.VerifySignature(version, server, getKey)
	}); r != nil {
		return store.Event{}, r
	}

	redacted := !p.VerifyContentHash()
	if redacted {
		// The signature covers the redacted form, which verified: keep that form.
		p.Redact(version)
	}
	p.Unsigned = nil
	prevs := make([]string, len(p.PrevEvents))
	for i, prev := range p.PrevEvents {
		prevs[i] = string(prev)
	}
	return mautrixStoredEvent(store.Event{
		ID: evID, RoomID: roomID, Depth: p.Depth, OriginServerTS: p.OriginServerTS, Type: p.Type,
		StateKey: p.StateKey, Sender: string(p.Sender), Origin: senderServer, PrevEvents: prevs,
		Redacted: redacted,
	}, &p)
}

// mautrixStoredEvent completes the store's copy of a PDU that verified: its canonical JSON as kept
// (verified is the PDU, already redacted if it had to be, and stripped of unsigned). An event that lists
// itself as a prev is refused.
func mautrixStoredEvent(ev store.Event, verified any) (store.Event, *Rejection) {
	if slices.Contains(ev.PrevEvents, ev.ID) {
		return store.Event{}, reject(RejectInconsistentSelf, ev.ID, "event lists itself as a prev event")
	}
	canonical, err := canonicaljson.Marshal(verified)
	if err != nil {
		return store.Event{}, reject(RejectMalformed, ev.ID, "re-encode PDU: %w", err)
	}
	ev.Raw = canonical
	return ev, nil
}

// mautrixVerifyV1PDU checks a PDU of room version 1 or 2, which carries its event ID: the ID is
// covered by the signatures, which the room version requires from the sender's server and
// from the server that minted the ID.
func mautrixVerifyV1PDU(ctx context.Context, roomID string, version id.RoomVersion, raw []byte, keys KeyFunc) (store.Event, *Rejection) {
	var p pdu.RoomV1PDU
	if err := json.Unmarshal(raw, &p); err != nil {
		return store.Event{}, reject(RejectMalformed, "", "parse PDU: %w", err)
	}
	evID := string(p.EventID)
	_, idServer, ok := strings.Cut(evID, ":")
	if !strings.HasPrefix(evID, "$") || !ok || idServer == "" {
		return store.Event{}, reject(RejectMalformed, evID, "event ID %q is not $opaque:server", evID)
	}
	if p.Type == "" || p.Sender == "" || p.Depth < 0 {
		return store.Event{}, reject(RejectMalformed, evID, "PDU lacks type or sender, or has a negative depth")
	}
	if string(p.RoomID) != roomID {
		return store.Event{}, reject(RejectWrongRoom, evID, "event of room %q, want %q", p.RoomID, roomID)
	}
	senderServer := p.Sender.Homeserver()
	if senderServer == "" {
		return store.Event{}, reject(RejectMalformed, evID, "sender %q has no server name", p.Sender)
	}
	servers := []string{senderServer}
	if idServer != senderServer {
		servers = append(servers, idServer)
	}
	if r := verifySignatures(ctx, evID, servers, keys, func(server string, getKey pdu.GetKeyFunc) error {
		return p.VerifySignature(version, server, getKey)
	}); r != nil {
		return store.Event{}, r
	}
	redacted := !p.VerifyContentHash()
	if redacted {
		p.Redact(version)
	}
	p.Unsigned = nil
	prevs := make([]string, len(p.PrevEvents))
	for i, prev := range p.PrevEvents {
		prevs[i] = string(prev.ID)
	}
	return mautrixStoredEvent(store.Event{
		ID: evID, RoomID: roomID, Depth: p.Depth, OriginServerTS: p.OriginServerTS, Type: p.Type,
		StateKey: p.StateKey, Sender: string(p.Sender), Origin: senderServer, PrevEvents: prevs,
		Redacted: redacted,
	}, &p)
}
