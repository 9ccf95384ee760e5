package federation

import (
	"bytes"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"errors"
	"io"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
)

// pduOf returns a PDU-shaped object exactly size bytes long (size ≥ 16).
func pduOf(size int) string {
	const head, tail = `{"padding":"`, `"}`
	return head + strings.Repeat("x", size-len(head)-len(tail)) + tail
}

func TestDecodePDUs(t *testing.T) {
	// 20000 '<' escaped as Go escapes them: 120 KiB on the wire, 20 KiB canonical.
	escaped := `{"body":"` + strings.Repeat(`\u003c`, 20000) + `"}`
	// Pretty-printed: over the limit as sent, within it canonical.
	spaced := `{"a":` + strings.Repeat(" ", MaxPDUBytes) + `1}`
	cases := []struct {
		name     string
		body     string
		maxPDUs  int
		maxBytes int64
		want     []string
		wantErr  error // nil: no error; else errors.Is
	}{
		{"answer", `{"origin":"x","origin_server_ts":1,"pdus":[{"a":1}, {"b":[2]}]}`, 2, 0, []string{`{"a":1}`, `{"b":[2]}`}, nil},
		{"whitespace around", " \n{ \"pdus\" : [ {} ] }\n ", 1, 0, []string{`{}`}, nil},
		{"members skipped in any order", `{"pdus":[{}],"origin":{"deep":[1,[2,{"x":null}]]},"z":"y"}`, 1, 0, []string{`{}`}, nil},
		{"empty", `{"pdus":[]}`, 0, 0, nil, nil},
		{"null list", `{"pdus":null}`, 5, 0, nil, nil},
		{"no list", `{"origin":"x"}`, 5, 0, nil, nil},
		{"non-objects are the verifier's to refuse", `{"pdus":[1,"x",null]}`, 3, 0, []string{`1`, `"x"`, `null`}, nil},
		{"invalid UTF-8 is the verifier's to refuse", "{\"pdus\":[{\"a\":\"\xff\"}]}", 1, 0, []string{"{\"a\":\"\xff\"}"}, nil},
		{"duplicate names in a PDU are the verifier's to refuse", `{"pdus":[{"a":1,"a":2}]}`, 1, 0, []string{`{"a":1,"a":2}`}, nil},
		{"PDU at the limit", `{"pdus":[` + pduOf(MaxPDUBytes) + `]}`, 1, 0, []string{pduOf(MaxPDUBytes)}, nil},
		{"PDU escaped past the limit, within it canonical", `{"pdus":[` + escaped + `]}`, 1, 0, []string{escaped}, nil},
		{"PDU spaced past the limit, within it canonical", `{"pdus":[` + spaced + `]}`, 1, 0, []string{spaced}, nil},
		{"body at the cap", `{"pdus":[{}]}`, 1, int64(len(`{"pdus":[{}]}`)), []string{`{}`}, nil},

		{"PDU nested to the depth limit", `{"pdus":[` + nested(MaxJSONDepth) + `]}`, 1, 0, []string{nested(MaxJSONDepth)}, nil},
		{"PDU nested past the depth limit", `{"pdus":[` + nested(MaxJSONDepth+1) + `]}`, 1, 0, nil, ErrBadResponse},

		{"one PDU too many", `{"pdus":[{},{},{}]}`, 2, 0, nil, ErrBadResponse},
		{"PDUs where none were asked for", `{"pdus":[{}]}`, 0, 0, nil, ErrBadResponse},
		{"PDU past the limit", `{"pdus":[` + pduOf(MaxPDUBytes+1) + `]}`, 1, 0, nil, ErrBadResponse},
		{"PDU far past the limit", `{"pdus":[` + pduOf(4*maxPDUWireBytes) + `]}`, 1, 0, nil, ErrBadResponse},
		{"huge unknown member", `{"padding":"` + strings.Repeat("x", 2*maxPDUWireBytes) + `","pdus":[]}`, 1, 0, nil, ErrBadResponse},
		{"huge member name", `{"` + strings.Repeat("x", 2*maxNameBytes+windowSlack) + `":1}`, 1, 0, nil, ErrBadResponse},
		{"body past the cap", `{"pdus":[{}]} `, 1, int64(len(`{"pdus":[{}]}`)), nil, mautrix.ErrBodyReadReachedLimit},
		{"list twice", `{"pdus":[{}],"pdus":[{}]}`, 1, 0, nil, ErrBadResponse},
		{"list not a list", `{"pdus":{"a":{}}}`, 1, 0, nil, ErrBadResponse},
		{"not an object", `[{}]`, 1, 0, nil, ErrBadResponse},
		{"null", `null`, 1, 0, nil, ErrBadResponse},
		{"empty body", ``, 1, 0, nil, ErrBadResponse},
		{"truncated", `{"origin":"x","pdus":[{"a":`, 1, 0, nil, ErrBadResponse},
		{"trailing value", `{"pdus":[]}{}`, 1, 0, nil, ErrBadResponse},
		{"trailing garbage", `{"pdus":[]} x`, 1, 0, nil, ErrBadResponse},
		{"missing comma", `{"pdus":[{} {}]}`, 2, 0, nil, ErrBadResponse},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			maxBytes := tc.maxBytes
			if maxBytes == 0 {
				maxBytes = DefaultMaxResponseBytes
			}
			got, err := decodePDUs(strings.NewReader(tc.body), maxBytes, "/backfill", "pdus", tc.maxPDUs)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrBadResponse) {
					t.Fatalf("err = %v, want %v (and %v)", err, tc.wantErr, ErrBadResponse)
				}
				if outcome, _ := Classify(err); outcome != OutcomeBadResponse {
					t.Errorf("Classify(%v) = %s", err, outcome)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d PDUs, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if string(got[i]) != tc.want[i] {
					t.Errorf("PDU %d = %.80s, want %.80s", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// floodReader serves a /backfill answer of n "{}" PDUs without allocating it, counting what
// is read.
type floodReader struct {
	head, elem, tail string
	n                int // elements left
	pending          []byte
	read             int64
}

func newFlood(head, elem, tail string, n int) *floodReader {
	return &floodReader{head: head, elem: elem, tail: tail, n: n, pending: []byte(head)}
}

func (f *floodReader) Read(p []byte) (int, error) {
	for len(f.pending) == 0 {
		switch {
		case f.n > 0:
			f.n--
			f.pending = []byte(f.elem)
			if f.n > 0 {
				f.pending = append(f.pending, ',')
			}
		case f.tail != "":
			f.pending, f.tail = []byte(f.tail), ""
		default:
			return 0, io.EOF
		}
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	f.read += int64(n)
	return n, nil
}

func TestDecodeStopsEarly(t *testing.T) {
	// 20 million tiny PDUs, 60 MiB: refused at the 102nd, having read a few KiB.
	flood := newFlood(`{"origin":"x","pdus":[`, `{}`, `]}`, 20_000_000)
	_, err := decodePDUs(flood, DefaultMaxResponseBytes, "/backfill", "pdus", 101)
	if !errors.Is(err, ErrBadResponse) {
		t.Fatalf("flood: %v", err)
	}
	if flood.read > 64<<10 {
		t.Errorf("flood refused after reading %d bytes", flood.read)
	}

	// One endless PDU: refused once it passes what a PDU may weigh as sent.
	endless := newFlood(`{"pdus":[{"x":"`, strings.Repeat("x", 1<<20), ``, 100)
	_, err = decodePDUs(endless, DefaultMaxResponseBytes, "/backfill", "pdus", 101)
	if !errors.Is(err, ErrBadResponse) {
		t.Fatalf("endless PDU: %v", err)
	}
	if endless.read > maxPDUWireBytes+2*windowSlack {
		t.Errorf("endless PDU refused after reading %d bytes", endless.read)
	}

	// A make_join template with 2.5 million prev_events.
	tmpl := newFlood(`{"room_version":"10","event":{"prev_events":[`, `"$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"`, `]}}`, 2_500_000)
	_, _, err = decodeJoinTemplate(tmpl, DefaultMaxResponseBytes)
	if !errors.Is(err, ErrBadResponse) {
		t.Fatalf("template flood: %v", err)
	}
	if tmpl.read > maxPDUWireBytes+2*windowSlack {
		t.Errorf("template flood refused after reading %d bytes", tmpl.read)
	}
}

// failingReader serves data, then fails with err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestDecodeKeepsReadErrors(t *testing.T) {
	// A body that stops arriving is the network's failure, not a bad answer: Classify must
	// see the cause.
	cause := errors.New("connection reset")
	_, err := decodePDUs(&failingReader{data: []byte(`{"pdus":[{}`), err: cause}, 1<<20, "/backfill", "pdus", 5)
	if !errors.Is(err, cause) || errors.Is(err, ErrBadResponse) {
		t.Errorf("err = %v, want the read error alone", err)
	}
}

func TestDecodeJoinTemplate(t *testing.T) {
	tmpl := `{"type":"m.room.member","prev_events":["$a","$b"]}`
	version, event, err := decodeJoinTemplate(strings.NewReader(`{"room_version":"11","event":`+tmpl+`}`), 1<<20)
	if err != nil || version != "11" || string(event) != tmpl {
		t.Errorf("template: %q %s %v", version, event, err)
	}
	if _, event, err := decodeJoinTemplate(strings.NewReader(`{"room_version":"11"}`), 1<<20); err != nil || event != nil {
		t.Errorf("no event: %s %v", event, err)
	}
	for name, body := range map[string]string{
		"event past the limit":   `{"room_version":"11","event":` + pduOf(MaxPDUBytes+1) + `}`,
		"version not a string":   `{"room_version":11,"event":{}}`,
		"version far too long":   `{"room_version":"` + strings.Repeat("1", 3*maxNameBytes) + `","event":{}}`,
		"not an object":          `["11",{}]`,
		"event truncated":        `{"room_version":"11","event":{"prev_events":["$a"`,
		"trailing after the end": `{"room_version":"11","event":{}}]`,
	} {
		if _, _, err := decodeJoinTemplate(strings.NewReader(body), 1<<20); !errors.Is(err, ErrBadResponse) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// /state and send_join answers: the state list under its field, the auth chain, each bounded
// like any PDU list, and a list given twice is a bad answer.
func TestDecodeStateAnswer(t *testing.T) {
	ans, err := decodeStateAnswer(strings.NewReader(`{"pdus":[{"a":1}],"auth_chain":[{"b":2},{"c":3}]}`), 1<<20, "/state", "pdus", maxJoinPDUs)
	if err != nil || len(ans.State) != 1 || len(ans.AuthChain) != 2 || string(ans.State[0]) != `{"a":1}` {
		t.Errorf("/state answer: %+v, %v", ans, err)
	}
	if ans, err := decodeStateAnswer(strings.NewReader(`{"state":[{}],"auth_chain":[],"event":{"e":1}}`), 1<<20, "/send_join", "state", maxJoinPDUs); err != nil || len(ans.State) != 1 || string(ans.Event) != `{"e":1}` {
		t.Errorf("send_join answer: %+v, %v", ans, err)
	}
	for name, body := range map[string]string{
		"pdus twice":       `{"pdus":[],"pdus":[{}]}`,
		"auth chain twice": `{"auth_chain":[],"auth_chain":[]}`,
		"a PDU too large":  `{"pdus":[` + pduOf(MaxPDUBytes+1) + `]}`,
		"truncated":        `{"pdus":[{"a":`,
	} {
		if _, err := decodeStateAnswer(strings.NewReader(body), 1<<20, "/state", "pdus", maxJoinPDUs); !errors.Is(err, ErrBadResponse) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestReadSmall(t *testing.T) {
	var out struct{ A int }
	if err := unmarshalSmall(strings.NewReader(`{"A":1}`), 7, "/x", &out); err != nil || out.A != 1 {
		t.Errorf("at the cap: %+v %v", out, err)
	}
	err := unmarshalSmall(strings.NewReader(`{"A":1} `), 7, "/x", &out)
	if !errors.Is(err, ErrBadResponse) || !errors.Is(err, mautrix.ErrBodyReadReachedLimit) {
		t.Errorf("past the cap: %v", err)
	}
	if err := unmarshalSmall(strings.NewReader(`{"A":`), 100, "/x", &out); !errors.Is(err, ErrBadResponse) {
		t.Errorf("truncated: %v", err)
	}
}

func FuzzDecodePDUs(f *testing.F) {
	for _, seed := range []string{
		`{"origin":"x","origin_server_ts":1,"pdus":[{"a":1},{"b":[2]}]}`,
		`{"pdus":null}`,
		`{"pdus":[{},{},{}]}`,
		`{"pdus":[{}],"pdus":[]}`,
		`{"events":[{"type":"m.room.message","content":{"body":"\u003c"}}]}`,
		`{"pdus":[` + strings.Repeat(`{},`, 50) + `{}]}`,
		`[]`, `null`, ``, `{"pdus":[{"a":`, "{\"pdus\":[\"\xff\"]}",
	} {
		f.Add([]byte(seed), uint8(2))
	}
	f.Fuzz(func(t *testing.T, body []byte, maxPDUs uint8) {
		const maxBytes = 1 << 20
		pdus, err := decodePDUs(bytes.NewReader(body), maxBytes, "/backfill", "pdus", int(maxPDUs))
		if err != nil {
			// The body is all there: whatever is wrong is the answer's fault.
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error not classed as a bad response: %v", err)
			}
			return
		}
		if len(pdus) > int(maxPDUs) {
			t.Fatalf("%d PDUs accepted, %d asked for", len(pdus), maxPDUs)
		}
		for _, p := range pdus {
			if pduSize(jsontext.Value(p)) > MaxPDUBytes {
				t.Fatalf("a PDU of %d bytes accepted", len(p))
			}
			if !jsontext.Value(p).IsValid(jsontext.AllowInvalidUTF8(true), jsontext.AllowDuplicateNames(true)) {
				t.Fatalf("invalid PDU accepted: %q", p)
			}
		}
		// What was accepted is what a strict decoder reads there too.
		var ref struct {
			PDUs []jsontext.Value `json:"pdus"`
		}
		if jsonv2.Unmarshal(body, &ref) == nil && len(ref.PDUs) != len(pdus) {
			t.Fatalf("%d PDUs, encoding/json/v2 reads %d", len(pdus), len(ref.PDUs))
		}
	})
}

// nested is a PDU-shaped object nested depth levels deep, the outer object included.
func nested(depth int) string {
	return strings.Repeat(`{"a":`, depth-1) + `{}` + strings.Repeat(`}`, depth-1)
}
