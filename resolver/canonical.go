package resolver

import (
	"bytes"
	"crypto/sha256"
	"encoding/json/jsontext"
	"sync"

	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Verifying a PDU needs three canonical encodings of it: the whole event without `unsigned`
// (what the store keeps), that less `hashes` and `signatures` (what the content hash covers),
// and the redacted event less `signatures` (what every signature and, from room version 3,
// the event ID cover). mautrix's pdu package encodes the event afresh for each of them, and
// again for each signing server, every time cloning and redacting the struct. Here the event
// is encoded once, by mautrix's canonicaljson, and the other two are cut from that encoding:
// canonical JSON is compact with the members of each object sorted, so an object less some
// of its members is canonical still, and the redacted event is the whole one less the
// members redaction drops, its content replaced by the redacted content (mautrix's
// RedactContent, canonicalized). TestCanonicalFormsMatchMautrix holds the cut forms to
// mautrix's own.

// pduForms are the encodings of one PDU that verification uses.
type pduForms struct {
	// full is the whole PDU in canonical JSON (its `unsigned` dropped beforehand).
	full []byte
	// signed is the redacted PDU without signatures, in canonical JSON: what the signatures
	// and the reference hash cover. It lives in buf.
	signed []byte
	// contentHash is the SHA-256 of full less hashes and signatures.
	contentHash [32]byte
	buf         *[]byte
}

// release returns the scratch buffer; signed is not to be used after.
func (f *pduForms) release() {
	if f.buf != nil {
		if cap(f.signed) <= maxPooledForm {
			*f.buf = f.signed[:0]
			formBuffers.Put(f.buf)
		}
		f.buf, f.signed = nil, nil
	}
}

// maxPooledForm is the largest buffer kept for another event (a PDU is at most 64 KiB).
const maxPooledForm = 64 << 10

// formBuffers hold the redacted and content-hash forms while an event is verified.
var formBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// encodePDU encodes v, a *pdu.PDU or *pdu.RoomV1PDU with no unsigned section, once and cuts
// the other forms from it. v1 selects the redaction of room versions 1 and 2 (which keep the
// event_id), content is the PDU's content as received. ok is false when the PDU does not
// encode (a number canonical JSON cannot hold, say): the caller then goes mautrix's way,
// which decides what such an event is.
func encodePDU(v any, eventType string, content jsontext.Value, version id.RoomVersion, v1 bool) (pduForms, bool) {
	full, err := canonicaljson.Marshal(v)
	if err != nil {
		return pduForms{}, false
	}
	var spans [24]jsonMember
	members, ok := objectMembers(full, spans[:0])
	if !ok {
		return pduForms{}, false
	}
	redacted, ok := redactedContent(eventType, content, version)
	if !ok {
		return pduForms{}, false
	}
	buf := formBuffers.Get().(*[]byte)
	out := (*buf)[:0]

	// The content hash: everything but hashes and signatures.
	out = append(out, '{')
	for _, m := range members {
		switch string(m.name(full)) {
		case "hashes", "signatures":
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, full[m.start:m.end]...)
	}
	out = append(out, '}')
	contentHash := sha256.Sum256(out)

	// The redacted form: the members redaction keeps, the content redacted.
	out = append(out[:0], '{')
	for _, m := range members {
		name := m.name(full)
		if !redactionKeeps(name, v1, version.UpdatedRedactionRules()) {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		if string(name) == "content" && redacted != nil {
			out = append(out, full[m.start:m.colon+1]...)
			out = append(out, redacted...)
			continue
		}
		out = append(out, full[m.start:m.end]...)
	}
	out = append(out, '}')
	return pduForms{full: full, signed: out, contentHash: contentHash, buf: buf}, true
}

// redactionKeeps says whether redaction (mautrix's PDU.Redact and RoomV1PDU.Redact, less the
// signatures as for a signature or the reference hash) keeps a top-level member: the PDU's
// fields but redacts, signatures, unsigned and msc4354_sticky; no unknown member; the
// legacy prev_state, origin and membership until the updated redaction rules (room version
// 11); event_id in room versions 1 and 2, whose PDUs carry it.
func redactionKeeps(name []byte, v1, updatedRules bool) bool {
	switch string(name) {
	case "auth_events", "content", "depth", "hashes", "origin_server_ts", "prev_events", "room_id", "sender", "state_key", "type":
		return true
	case "event_id":
		return v1
	case "prev_state", "origin", "membership":
		return v1 || !updatedRules
	}
	return false
}

// emptyContent is the redacted content of most event types.
const emptyContent = "{}"

// redactedContent is the canonical JSON of content redacted for eventType, or nil when
// redaction keeps the content as it is (a create event under the updated rules).
func redactedContent(eventType string, content jsontext.Value, version id.RoomVersion) ([]byte, bool) {
	r := pdu.RedactContent(eventType, content, version)
	switch {
	case len(r) == len(content) && (len(r) == 0 || &r[0] == &content[0]):
		return nil, true
	case string(r) == emptyContent:
		return []byte(emptyContent), true
	}
	c := jsontext.Value(bytes.Clone(r))
	if err := canonicaljson.Canonicalize(&c); err != nil {
		return nil, false
	}
	return c, true
}

// jsonMember is where one member of a JSON object lies: "name" from start, the colon after
// it, the value to end.
type jsonMember struct{ start, colon, end int }

func (m jsonMember) name(obj []byte) []byte { return obj[m.start+1 : m.colon-1] }

// objectMembers appends the members of obj, a compact JSON object (no space outside
// strings, as json v2 writes it), to out. ok is false if obj is not one.
func objectMembers(obj []byte, out []jsonMember) ([]jsonMember, bool) {
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return nil, false
	}
	if len(obj) == 2 {
		return out, true
	}
	for i := 1; ; {
		if obj[i] != '"' {
			return nil, false
		}
		colon := skipJSONString(obj, i)
		if colon < 0 || colon >= len(obj) || obj[colon] != ':' {
			return nil, false
		}
		end := skipJSONValue(obj, colon+1)
		if end < 0 || end >= len(obj) {
			return nil, false
		}
		out = append(out, jsonMember{start: i, colon: colon, end: end})
		switch obj[end] {
		case ',':
			i = end + 1
		case '}':
			return out, end == len(obj)-1
		default:
			return nil, false
		}
	}
}

// skipJSONString returns the index after the string that starts at b[i], or -1.
func skipJSONString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipJSONValue returns the index after the compact JSON value that starts at b[i], or -1.
func skipJSONValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipJSONString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				k := skipJSONString(b, j)
				if k < 0 {
					return -1
				}
				j = k - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	for j := i; j < len(b); j++ {
		switch b[j] {
		case ',', '}', ']':
			if j == i {
				return -1
			}
			return j
		}
	}
	return -1
}
