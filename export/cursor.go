package export

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
)

// cursorPrefix versions the cursor's encoding, so that a later roomsync can read or refuse
// the cursors of this one.
const cursorPrefix = "v1."

// maxCursorLen bounds what ParseCursor decodes: a room ID is at most 255 bytes.
const maxCursorLen = 1024

// Cursor is where an export ended: the room, and the last arrival number it covered. Its
// text form (String) is opaque to users; scripts keep it and hand it back with --after.
type Cursor struct {
	RoomID string `json:"room"`
	Seq    int64  `json:"seq"`
}

// String is the cursor's opaque text: "v1." and the URL-safe base64 of a small JSON object,
// so that it survives shells, URLs and file names unquoted.
func (c Cursor) String() string {
	b, _ := json.Marshal(c) // a string and an integer: cannot fail
	return cursorPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseCursor reads a cursor that String wrote. Anything else is ErrBadInput.
func ParseCursor(s string) (Cursor, error) {
	bad := func(why string) (Cursor, error) {
		return Cursor{}, badInput("malformed cursor %q: %s (use the cursor an export printed)", abbreviate(s), why)
	}
	if len(s) > maxCursorLen {
		return bad("too long")
	}
	payload, ok := strings.CutPrefix(s, cursorPrefix)
	if !ok {
		return bad("it does not start with " + cursorPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return bad("not base64")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var c Cursor
	if err := dec.Decode(&c); err != nil || dec.More() {
		return bad("not a cursor")
	}
	if c.RoomID == "" || c.Seq < 0 {
		return bad("no room, or a negative position")
	}
	return c, nil
}

// abbreviate shortens what a user typed for an error message.
func abbreviate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
