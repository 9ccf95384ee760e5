package export

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"github.com/roomsync/roomsync/store"
)

// textEncoder writes a transcript for people, one event a line:
//
//	2024-01-01 00:00:05 UTC  <@alice:example.org> hello
//	2024-01-01 00:00:09 UTC  * @bob:example.org was kicked by @alice:example.org: spam
//	2024-01-01 00:01:12 UTC  [redacted] <@carol:example.org> (no body)
//	2024-01-01 00:01:13 UTC  [rejected: …] <@mallory:evil.example> not a member
//
// Times are origin_server_ts in UTC, as the sender's server claimed it. Messages show their
// body (other msgtypes than m.text in brackets, m.emote as "* sender body"); membership and
// state changes are spelled out, membership against the member event they replace (named in
// the event's auth events); events held only redacted and rejected events are marked. A
// body's further lines are indented, and control and bidirectional-override characters are
// shown as U+FFFD, so that every line at the margin is an event and what the transcript
// shows is what it says.
type textEncoder struct {
	st store.Store
}

// timeLayout is the time at the start of each line.
const timeLayout = "2006-01-02 15:04:05 UTC"

// continuation indents the further lines of an event's text.
const continuation = "    "

func (t *textEncoder) encode(ctx context.Context, w *bufio.Writer, page []store.SequencedEvent) error {
	prior, err := t.priorEvents(ctx, page)
	if err != nil {
		return err
	}
	for _, e := range page {
		var line strings.Builder
		line.WriteString(time.UnixMilli(e.OriginServerTS).UTC().Format(timeLayout))
		line.WriteString("  ")
		if e.Redacted {
			line.WriteString("[redacted] ")
		}
		if e.Rejected != "" {
			fmt.Fprintf(&line, "[rejected: %s] ", e.Rejected)
		}
		line.WriteString(describe(e.Event, prior))
		w.WriteString(printable(line.String()))
		w.WriteByte('\n')
	}
	if _, err := w.Write(nil); err != nil { // bufio.Writer keeps its first error
		return fmt.Errorf("write the export: %w", err)
	}
	return nil
}

// priorEvents reads the auth events of the page's member and power-levels events: among
// them is the member event or power levels that each replaces, what a change is told
// against. One read a page, of a few events per state change.
func (t *textEncoder) priorEvents(ctx context.Context, page []store.SequencedEvent) (priorState, error) {
	var ids []string
	for _, e := range page {
		if e.StateKey != nil && (e.Type == "m.room.member" || e.Type == "m.room.power_levels") {
			ids = append(ids, authEventIDs(e.Raw)...)
		}
	}
	if len(ids) == 0 {
		return priorState{}, nil
	}
	events, err := t.st.Events(ctx, ids)
	if err != nil {
		return priorState{}, fmt.Errorf("read the auth events of member and power level changes: %w", err)
	}
	return priorState(events), nil
}

// priorState are events an event's auth events name, by ID.
type priorState map[string]store.Event

// of returns the content of the state entry (typ, stateKey) among e's auth events: the
// entry e replaces, as its sender's server saw the state.
func (p priorState) of(e store.Event, typ, stateKey string) (gjson.Result, bool) {
	for _, id := range authEventIDs(e.Raw) {
		if a, ok := p[id]; ok && a.Type == typ && a.StateKey != nil && *a.StateKey == stateKey {
			return gjson.GetBytes(a.Raw, "content"), true
		}
	}
	return gjson.Result{}, false
}

// authEventIDs are a PDU's auth events: IDs, or [ID, hashes] pairs in room versions 1 and 2.
func authEventIDs(raw []byte) []string {
	var ids []string
	gjson.GetBytes(raw, "auth_events").ForEach(func(_, v gjson.Result) bool {
		if v.IsArray() {
			v = v.Get("0")
		}
		if v.Type == gjson.String {
			ids = append(ids, v.Str)
		}
		return true
	})
	return ids
}

// printable makes text safe to show: its lines after the first indented, and characters
// that a terminal or an editor would act on (controls, bidirectional overrides, invalid
// UTF-8) replaced by U+FFFD.
func printable(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i, line := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		if i > 0 {
			b.WriteByte('\n')
			b.WriteString(continuation)
		}
		for len(line) > 0 {
			r, size := utf8.DecodeRuneInString(line)
			switch {
			case r == '\t':
				b.WriteByte(' ')
			case r == utf8.RuneError && size == 1, unicode.IsControl(r), isBidiControl(r):
				b.WriteRune(utf8.RuneError)
			default:
				b.WriteString(line[:size])
			}
			line = line[size:]
		}
	}
	return b.String()
}

// isBidiControl reports the embedding, override and isolate characters that reorder how
// text displays ("Trojan Source").
func isBidiControl(r rune) bool {
	return (r >= '\u202a' && r <= '\u202e') || (r >= '\u2066' && r <= '\u2069')
}
