package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// Limits of an inbound transaction (PUT /_matrix/federation/v1/send/{txnId}).
const (
	// MaxTransactionPDUs and MaxTransactionEDUs are the spec's limits on one transaction.
	MaxTransactionPDUs = 50
	MaxTransactionEDUs = 100
	// SendMaxBody bounds a transaction's body: 50 PDUs of the 64 KiB an event may weigh fill
	// 3.2 MiB, and EDUs are small.
	SendMaxBody = 4 << 20
)

// PDUReceiver takes the PDUs of a transaction from origin (the server that signed the
// request) and says, per event ID, what became of each: "" for accepted, else why it was
// refused. PDUs it cannot name get no entry. An error refuses the whole transaction: a
// mautrix.RespError is answered as it is (403 M_FORBIDDEN when none of its rooms is ours),
// any other as a 500.
type PDUReceiver func(ctx context.Context, origin string, pdus []json.RawMessage) (map[string]string, error)

// transaction is the body of /send. The origin in the body is not used: the one that counts
// is the server whose signature the request carries. EDUs are counted, never read.
type transaction struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []json.RawMessage `json:"edus"`
}

// HandleSend serves PUT /_matrix/federation/v1/send/{txnId} with receive, for requests signed
// by their origin (see RequireAuth). The transaction's PDUs go to receive; its EDUs (typing,
// receipts, presence, device lists, signing keys, to-device messages) mean nothing to a
// replica and are accepted and dropped. A nil receive registers nothing, so /send stays an
// unrecognized endpoint (404 M_UNRECOGNIZED).
//
// The transaction ID is not remembered: a sender retries a transaction under the same ID,
// possibly with more PDUs, and receive is idempotent by event ID.
func (s *Server) HandleSend(receive PDUReceiver) {
	if receive == nil {
		return
	}
	s.HandleAuthenticated(http.MethodPut, "/_matrix/federation/v1/send/{txnId}", SendMaxBody,
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			serveSend(w, r, receive)
		}))
}

// writeError answers err: as the Matrix error it is, or as a 500 M_UNKNOWN.
func writeError(w http.ResponseWriter, err error) {
	var respErr mautrix.RespError
	if errors.As(err, &respErr) {
		if respErr.StatusCode == 0 {
			respErr.StatusCode = http.StatusBadRequest
		}
		respErr.Write(w)
		return
	}
	mautrix.MUnknown.WithStatus(http.StatusInternalServerError).WithMessage("%v", err).Write(w)
}

func serveSend(w http.ResponseWriter, r *http.Request, receive PDUReceiver) {
	var txn transaction
	if err := json.NewDecoder(r.Body).Decode(&txn); err != nil {
		mautrix.MBadJSON.WithMessage("transaction is not valid JSON: %v", err).Write(w)
		return
	}
	if len(txn.PDUs) > MaxTransactionPDUs || len(txn.EDUs) > MaxTransactionEDUs {
		mautrix.MBadJSON.WithMessage("a transaction holds at most %d PDUs and %d EDUs, not %d and %d",
			MaxTransactionPDUs, MaxTransactionEDUs, len(txn.PDUs), len(txn.EDUs)).Write(w)
		return
	}
	origin := mfed.OriginServerName(r.Context())
	results, err := receive(r.Context(), origin, txn.PDUs)
	if err != nil {
		writeError(w, err)
		return
	}
	resp := mfed.RespSendTransaction{PDUs: make(map[id.EventID]mfed.PDUProcessingResult, len(results))}
	for eventID, errText := range results {
		resp.PDUs[id.EventID(eventID)] = mfed.PDUProcessingResult{Error: errText}
	}
	writeJSON(w, resp)
}

// writeJSON answers 200 with v as JSON.
func writeJSON(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		mautrix.MUnknown.WithStatus(http.StatusInternalServerError).WithMessage("encode answer: %v", err).Write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
