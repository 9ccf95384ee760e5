package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"io"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	mfed "maunium.net/go/mautrix/federation"
)

// An answer is decoded as it streams in, so that what a peer sends costs us no more memory
// than what we asked for: the count of PDUs is checked element by element against the
// request's limit, and no single value may make the decoder buffer more than a PDU may weigh.
// Decoding the whole body first (as mautrix's helpers do) turns a 60 MiB answer of 20
// million "{}" into nearly 2 GB of slices before anything can be counted, and the resolver
// then works through every one.

// MaxPDUBytes is the most a PDU may weigh: the spec's 65536 bytes, measured on its canonical
// JSON as Synapse measures it. An answer carrying a larger one is a bad answer.
const MaxPDUBytes = 64 << 10

// Caps on the answers that are read whole before they are parsed.
const (
	// maxKeyAnswerBytes caps /key/v2/server and /key/v2/query answers: a server's keys, or
	// one server's keys through a notary, are a few KiB.
	maxKeyAnswerBytes = 1 << 20
	// maxTimestampAnswerBytes caps /timestamp_to_event: an event ID and a timestamp.
	maxTimestampAnswerBytes = 64 << 10
)

const (
	// maxPDUWireBytes bounds one PDU as a peer may send it. Servers escape more than
	// canonical JSON does (Go's encoding/json sends '<' as \u003c, 6 bytes for 1; Python's
	// ensure_ascii sends 3 bytes for each byte of non-ASCII text), so a PDU within MaxPDUBytes
	// can be longer on the wire; not longer than this.
	maxPDUWireBytes = 6 * MaxPDUBytes
	// maxNameBytes bounds an object member name and small scalars in an answer's envelope.
	maxNameBytes = 4 << 10
	// windowSlack is the whitespace and delimiters allowed around one value.
	windowSlack = 4 << 10
)

// answerReader feeds a response body to the decoder. It fails the read that would take the
// body past max bytes (the client's response cap) and, so that the decoder never buffers a
// value larger than what the answer may hold, any read past the end of the window the decoder
// is given for the value it is reading. The decoder reads only when the token it is on goes
// on past what it holds, so a refused read always means that value is too long.
type answerReader struct {
	r         io.Reader
	n         int64 // bytes read
	max       int64
	windowEnd int64  // offset past which reads are refused
	item      string // what the window is for, for the error
	itemMax   int64
	readErr   error // the body's own error, other than io.EOF
	refused   error // why a read was refused
}

func (a *answerReader) Read(p []byte) (int, error) {
	if a.n > a.max {
		a.refused = fmt.Errorf("%w: body over %d bytes: %w", ErrBadResponse, a.max, mautrix.ErrBodyReadReachedLimit)
		return 0, a.refused
	}
	if a.n >= a.windowEnd {
		a.refused = fmt.Errorf("%w: %s longer than %d bytes", ErrBadResponse, a.item, a.itemMax)
		return 0, a.refused
	}
	// Reading one byte past max tells a body of exactly max bytes from a longer one.
	p = p[:min(int64(len(p)), a.windowEnd-a.n, a.max+1-a.n)]
	n, err := a.r.Read(p)
	a.n += int64(n)
	if err != nil && err != io.EOF {
		a.readErr = err
	}
	return n, err
}

// answerDecoder decodes one answer of an endpoint (what, e.g. "/backfill") from a body.
type answerDecoder struct {
	in   *answerReader
	dec  *jsontext.Decoder
	what string
}

func newAnswerDecoder(body io.Reader, maxBytes int64, what string) *answerDecoder {
	in := &answerReader{r: body, max: maxBytes}
	// Invalid UTF-8 and duplicate names inside a PDU are the verifier's to judge, per event,
	// as they were when answers were decoded with encoding/json: not a reason to drop the
	// whole answer.
	dec := jsontext.NewDecoder(in, jsontext.AllowInvalidUTF8(true), jsontext.AllowDuplicateNames(true))
	return &answerDecoder{in: in, dec: dec, what: what}
}

// window lets the next token or value take up to n bytes of the body, plus whitespace.
func (d *answerDecoder) window(n int64, item string) {
	d.in.windowEnd = d.dec.InputOffset() + n + windowSlack
	d.in.item, d.in.itemMax = item, n
}

// peek returns the kind of the next token, or the error that prevents reading it.
func (d *answerDecoder) peek() (jsontext.Kind, error) {
	if k := d.dec.PeekKind(); k != jsontext.KindInvalid {
		return k, nil
	}
	// PeekKind keeps its error for the next read.
	if _, err := d.dec.ReadToken(); err != nil {
		return jsontext.KindInvalid, err
	}
	return jsontext.KindInvalid, fmt.Errorf("%w: unexpected token", ErrBadResponse)
}

// object reads a JSON object, handing each member's name to member, which reads the value
// and returns true, or returns false to have it skipped (within maxPDUWireBytes).
func (d *answerDecoder) object(member func(name string) (bool, error)) error {
	d.window(maxNameBytes, "answer")
	k, err := d.peek()
	if err != nil {
		return err
	}
	if k != '{' {
		return fmt.Errorf("%w: the answer is not a JSON object (%v)", ErrBadResponse, k)
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return err
	}
	for {
		d.window(maxNameBytes, "member name")
		if k, err := d.peek(); err != nil {
			return err
		} else if k == '}' {
			_, err := d.dec.ReadToken()
			return err
		}
		tok, err := d.dec.ReadToken()
		if err != nil {
			return err
		}
		name := tok.String()
		read, err := member(name)
		if err != nil {
			return err
		}
		if !read {
			d.window(maxPDUWireBytes, "a member we do not read")
			if err := d.dec.SkipValue(); err != nil {
				return err
			}
		}
	}
}

// pdus reads an array of at most maxCount PDUs (or null, none) named field.
func (d *answerDecoder) pdus(field string, maxCount int) ([]json.RawMessage, error) {
	d.window(0, field)
	k, err := d.peek()
	if err != nil {
		return nil, err
	}
	switch k {
	case 'n':
		_, err := d.dec.ReadToken()
		return nil, err
	case '[':
	default:
		return nil, fmt.Errorf("%w: %s is not an array (%v)", ErrBadResponse, field, k)
	}
	if _, err := d.dec.ReadToken(); err != nil {
		return nil, err
	}
	var out []json.RawMessage
	for {
		d.window(maxPDUWireBytes, "a PDU, as sent,")
		if k, err := d.peek(); err != nil {
			return nil, err
		} else if k == ']' {
			_, err := d.dec.ReadToken()
			return out, err
		}
		if len(out) >= maxCount {
			return nil, fmt.Errorf("%w: more than the %d PDUs asked for in %s", ErrBadResponse, maxCount, field)
		}
		pdu, err := d.pdu()
		if err != nil {
			return nil, err
		}
		out = append(out, pdu)
	}
}

// pdu reads one PDU (the window set) and checks its size.
func (d *answerDecoder) pdu() (json.RawMessage, error) {
	v, err := d.dec.ReadValue()
	if err != nil {
		return nil, err
	}
	if size := pduSize(v); size > MaxPDUBytes {
		return nil, fmt.Errorf("%w: a PDU of %d bytes, over the limit of %d", ErrBadResponse, size, MaxPDUBytes)
	}
	if err := checkJSONDepth(v); err != nil {
		return nil, fmt.Errorf("%w: a PDU: %w", ErrBadResponse, err)
	}
	// The decoder reuses its buffer.
	return bytes.Clone(v), nil
}

// pduSize is the length of a PDU's canonical JSON, which is what the limit is on; a value
// that cannot be made canonical counts as sent.
func pduSize(v jsontext.Value) int {
	if len(v) <= MaxPDUBytes {
		// Canonical JSON is never longer than what it was made from.
		return len(v)
	}
	c := bytes.Clone(v)
	if err := canonicaljson.Canonicalize((*jsontext.Value)(&c)); err != nil {
		return len(v)
	}
	return len(c)
}

// str reads a string of at most maxNameBytes.
func (d *answerDecoder) str(field string) (string, error) {
	d.window(maxNameBytes, field)
	tok, err := d.dec.ReadToken()
	if err != nil {
		return "", err
	}
	if tok.Kind() != '"' {
		return "", fmt.Errorf("%w: %s is not a string (%v)", ErrBadResponse, field, tok.Kind())
	}
	return tok.String(), nil
}

// finish checks that nothing follows the answer and gives the error its class: a body that
// failed to arrive keeps its own error (a timeout stays a timeout); anything that arrived
// but is not the answer promised is ErrBadResponse.
func (d *answerDecoder) finish(err error) error {
	if err == nil {
		d.window(0, "trailing data")
		_, err = d.dec.ReadToken()
		if err == io.EOF {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%w: data after the answer", ErrBadResponse)
		}
	}
	switch {
	case d.in.refused != nil:
		// The decoder's wrapping adds nothing to why we stopped reading.
		return fmt.Errorf("%s answer: %w", d.what, d.in.refused)
	case errors.Is(err, ErrBadResponse):
		return fmt.Errorf("%s answer: %w", d.what, err)
	case d.in.readErr != nil:
		return fmt.Errorf("read %s answer: %w", d.what, err)
	default:
		return fmt.Errorf("%s answer: %w: %w", d.what, ErrBadResponse, err)
	}
}

// decodePDUs reads a /backfill, /event or /get_missing_events answer from body (at most
// maxBytes): an object whose member field lists at most maxPDUs PDUs, each at most
// MaxPDUBytes. Other members are skipped.
func decodePDUs(body io.Reader, maxBytes int64, what, field string, maxPDUs int) ([]json.RawMessage, error) {
	d := newAnswerDecoder(body, maxBytes, what)
	var pdus []json.RawMessage
	seen := false
	err := d.object(func(name string) (bool, error) {
		if name != field {
			return false, nil
		}
		if seen {
			// A second list would let a peer double what we asked for.
			return true, fmt.Errorf("%w: %s twice", ErrBadResponse, field)
		}
		seen = true
		var err error
		pdus, err = d.pdus(field, maxPDUs)
		return true, err
	})
	if err := d.finish(err); err != nil {
		return nil, err
	}
	return pdus, nil
}

// decodeJoinTemplate reads a make_join answer from body (at most maxBytes): the room version
// and the event template, which is itself a PDU and bounded like one. That bounds its
// prev_events too.
func decodeJoinTemplate(body io.Reader, maxBytes int64) (version string, event json.RawMessage, err error) {
	d := newAnswerDecoder(body, maxBytes, "/make_join")
	err = d.object(func(name string) (bool, error) {
		var err error
		switch name {
		case "room_version":
			version, err = d.str(name)
		case "event":
			d.window(maxPDUWireBytes, "the event template, as sent,")
			event, err = d.pdu()
		default:
			return false, nil
		}
		return true, err
	})
	if err := d.finish(err); err != nil {
		return "", nil, err
	}
	return version, event, nil
}

// decodeJoinAnswer reads a send_join v2 answer from body (at most maxBytes): state and
// auth_chain, PDUs each bounded like any, and the event.
func decodeJoinAnswer(body io.Reader, maxBytes int64) (JoinAnswer, error) {
	return decodeStateAnswer(body, maxBytes, "/send_join", "state", maxJoinPDUs)
}

// decodeStateAnswer reads an answer that lists room state events and their auth chain, each
// list of at most maxPDUs: send_join's (state, auth_chain, and the join event) and /state's
// (pdus, auth_chain), named by stateField.
func decodeStateAnswer(body io.Reader, maxBytes int64, what, stateField string, maxPDUs int) (JoinAnswer, error) {
	d := newAnswerDecoder(body, maxBytes, what)
	var ans JoinAnswer
	seen := map[string]bool{}
	err := d.object(func(name string) (bool, error) {
		switch name {
		case stateField, "auth_chain", "event":
			if seen[name] {
				return true, fmt.Errorf("%w: %s twice", ErrBadResponse, name)
			}
			seen[name] = true
		default:
			return false, nil
		}
		var err error
		switch name {
		case stateField:
			ans.State, err = d.pdus(name, maxPDUs)
		case "auth_chain":
			ans.AuthChain, err = d.pdus(name, maxPDUs)
		case "event":
			d.window(maxPDUWireBytes, "the join event, as sent,")
			ans.Event, err = d.pdu()
		}
		return true, err
	})
	if err := d.finish(err); err != nil {
		return JoinAnswer{}, err
	}
	return ans, nil
}

// readSmall reads a whole body that may not pass maxBytes: the answers small enough to
// parse in one piece with mautrix's types.
func readSmall(body io.Reader, maxBytes int64, what string) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(body, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s answer: %w", what, err)
	}
	if int64(len(raw)) > maxBytes {
		return nil, fmt.Errorf("%s answer: %w: over %d bytes: %w", what, ErrBadResponse, maxBytes, mautrix.ErrBodyReadReachedLimit)
	}
	return raw, nil
}

// unmarshalSmall reads a body with readSmall and unmarshals it into out. A JSON null leaves
// out nil, which the caller reports.
func unmarshalSmall(body io.Reader, maxBytes int64, what string, out any) error {
	raw, err := readSmall(body, maxBytes, what)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s answer: %w: %w", what, ErrBadResponse, err)
	}
	return nil
}

// fetchAnswer sends a request and hands the body of a successful answer to decode with its
// cap: the smaller of maxBytes and the client's response cap. The body is closed after.
// Error statuses come back as mautrix.HTTPError, as from mautrix's own helpers, for Classify.
func (c *Client) fetchAnswer(ctx context.Context, params mfed.RequestParams, maxBytes int64, what string, decode func(body io.Reader, maxBytes int64) error) error {
	params.ResponseJSON, params.DontReadBody = nil, true
	_, resp, err := c.fed.MakeFullRequest(ctx, params)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	maxBytes = min(maxBytes, c.fed.ResponseSizeLimit)
	if resp.ContentLength > maxBytes {
		return fmt.Errorf("%s answer of %d bytes: %w: %w", what, resp.ContentLength, ErrBadResponse, mautrix.ErrResponseTooLong)
	}
	return decode(resp.Body, maxBytes)
}
