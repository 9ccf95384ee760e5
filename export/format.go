package export

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/roomsync/roomsync/store"
)

// Format is what an export writes.
type Format string

const (
	// FormatPDUs is NDJSON of the signed federation PDUs as the store holds them (canonical
	// JSON, byte for byte, a redacted copy in its redacted form): what another server or
	// roomsync itself can verify again.
	FormatPDUs Format = "pdus"
	// FormatEvents is NDJSON of the events in the client-server format (see clientEvent).
	FormatEvents Format = "events"
	// FormatText is a transcript for people (see textEncoder).
	FormatText Format = "text"
)

// Formats are the formats, the default first.
var Formats = []Format{FormatPDUs, FormatEvents, FormatText}

// ParseFormat reads a format name; "" is FormatPDUs.
func ParseFormat(s string) (Format, error) {
	if s == "" {
		return FormatPDUs, nil
	}
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", badInput("unknown format %q: want pdus, events or text", abbreviate(s))
}

// ContentType is the format's media type, for HTTP.
func (f Format) ContentType() string {
	if f == FormatText {
		return "text/plain; charset=utf-8"
	}
	return "application/x-ndjson"
}

// Extension is the file name extension of the format.
func (f Format) Extension() string {
	if f == FormatText {
		return ".txt"
	}
	return ".ndjson"
}

// encoder writes pages of events in one format, in the order they come.
type encoder interface {
	encode(ctx context.Context, w *bufio.Writer, page []store.SequencedEvent) error
}

func newEncoder(f Format, st store.Store, roomID string) (encoder, error) {
	switch f {
	case FormatPDUs:
		return pduEncoder{}, nil
	case FormatEvents:
		return newEventEncoder(roomID), nil
	case FormatText:
		return &textEncoder{st: st}, nil
	}
	return nil, badInput("unknown format %q: want pdus, events or text", abbreviate(string(f)))
}

// pduEncoder writes each PDU as stored, one a line.
type pduEncoder struct{}

func (pduEncoder) encode(_ context.Context, w *bufio.Writer, page []store.SequencedEvent) error {
	for _, e := range page {
		raw := e.Raw
		// The store keeps canonical JSON, which has no line breaks; a line break would
		// split an NDJSON record, so anything else is compacted rather than trusted.
		if bytes.ContainsAny(raw, "\r\n") {
			var buf bytes.Buffer
			if err := json.Compact(&buf, raw); err != nil {
				return fmt.Errorf("event %s: stored JSON is invalid: %w", e.ID, err)
			}
			raw = buf.Bytes()
		}
		w.Write(raw)
		w.WriteByte('\n')
	}
	if _, err := w.Write(nil); err != nil { // bufio.Writer keeps its first error
		return fmt.Errorf("write the export: %w", err)
	}
	return nil
}
