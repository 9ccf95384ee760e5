package controllers

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tidwall/gjson"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	roomsyncv1alpha1 "github.com/roomsync/roomsync/api/v1alpha1"
	"github.com/roomsync/roomsync/resolver"
	"github.com/roomsync/roomsync/resolver/federation"
)

// Metrics are roomsync's Prometheus series, on controller-runtime's registry so the manager's
// metrics endpoint serves them beside the controller's own.
type Metrics struct {
	EventsStored     *prometheus.CounterVec
	EventsRejected   *prometheus.CounterVec
	Requests         *prometheus.CounterVec
	RequestDuration  *prometheus.HistogramVec
	RoomEvents       *prometheus.GaugeVec
	RoomGaps         *prometheus.GaugeVec
	RoomUnfillable   *prometheus.GaugeVec
	RoomConverged    *prometheus.GaugeVec
	RoomLastSync     *prometheus.GaugeVec
	PeerHealthy      *prometheus.GaugeVec
	ReconcileSeconds *prometheus.HistogramVec
	RoomJoined       *prometheus.GaugeVec
	StoreFull        *prometheus.GaugeVec
	// The live path: what peers push to our listener.
	Transactions *prometheus.CounterVec
	PDUsReceived *prometheus.CounterVec
	LiveLatency  prometheus.Histogram
	// Serving the replica: history requests other servers make to our listener.
	ServedRequests *prometheus.CounterVec
	ServedEvents   *prometheus.CounterVec
	ServeDuration  *prometheus.HistogramVec
}

var (
	registerOnce sync.Once
	registered   *Metrics
)

// NewMetrics creates the series and registers them once with controller-runtime's registry;
// later calls return the same series.
func NewMetrics() *Metrics {
	registerOnce.Do(func() {
		m := &Metrics{
			EventsStored: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "roomsync_events_stored_total",
				Help: "Events stored (new or upgraded from their redacted form), by room.",
			}, []string{"room"}),
			EventsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "roomsync_events_rejected_total",
				Help: "PDUs refused by verification, by room and reason.",
			}, []string{"room", "reason"}),
			Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "roomsync_federation_requests_total",
				Help: "Federation requests, by peer, endpoint and outcome.",
			}, []string{"peer", "endpoint", "outcome"}),
			RequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "roomsync_federation_request_duration_seconds",
				Help:    "Latency of federation requests, by peer and endpoint.",
				Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10),
			}, []string{"peer", "endpoint"}),
			RoomEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "roomsync_room_events",
				Help: "Events held in the store for a room of a RoomSync.",
			}, []string{"namespace", "name", "room"}),
			RoomGaps: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "roomsync_room_gaps",
				Help: "Known missing events of a room (backward extremities within the history bound and unseen peer heads).",
			}, []string{"namespace", "name", "room"}),
			RoomUnfillable: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "roomsync_room_unfillable_gaps",
				Help: "Gaps of a room that no peer could fill at the last attempt.",
			}, []string{"namespace", "name", "room"}),
			RoomConverged: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "roomsync_room_converged",
				Help: "1 when the room holds every event its peers gave, else 0.",
			}, []string{"namespace", "name", "room"}),
			// A timestamp rather than an age: Prometheus computes the age (time() - x), and a
			// room the passes stop reaching shows up even though nothing else about it changes.
			RoomLastSync: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "roomsync_room_last_sync_timestamp_seconds",
				Help: "Unix time of the last pass that reached a room of a RoomSync.",
			}, []string{"namespace", "name", "room"}),
			// Per RoomSync, not per peer alone: each RoomSync keeps its own peer health (see
			// Syncer), so one peer can be backed off for one RoomSync and fine for another.
			PeerHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "roomsync_peer_healthy",
				Help: "1 when a peer of a RoomSync answered at the last pass, 0 while it or one of its endpoints is backed off.",
			}, []string{"namespace", "name", "peer"}),
			ReconcileSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "roomsync_reconcile_duration_seconds",
				Help:    "Duration of RoomSync reconciles, by result.",
				Buckets: prometheus.ExponentialBuckets(0.01, 3, 10),
			}, []string{"result"}),
		}
		m.RoomJoined = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "roomsync_room_joined",
			Help: "1 when our user is joined to a room of a RoomSync, else 0.",
		}, []string{"namespace", "name", "room"})
		// The Ready reason StoreFull as a series: no other says that passes store nothing,
		// as the rooms' series keep their last values while the store refuses writes.
		m.StoreFull = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "roomsync_store_full",
			Help: "1 while the last pass of a RoomSync found the event store full (Ready reason StoreFull), else 0.",
		}, []string{"namespace", "name"})
		m.Transactions = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomsync_transactions_received_total",
			Help: "Transactions (PUT /send) peers pushed to our listener and we took, by origin.",
		}, []string{"origin"})
		m.PDUsReceived = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomsync_pdus_received_total",
			Help: "PDUs pushed to our listener, by outcome: accepted (stored, or held already) or refused.",
		}, []string{"outcome"})
		// From the event's origin_server_ts (the sender's clock) to its storage here.
		m.LiveLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "roomsync_live_event_latency_seconds",
			Help:    "Time from a pushed event's origin_server_ts to its storage.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12),
		})
		m.ServedRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomsync_served_requests_total",
			Help: "History requests (backfill, get_missing_events, event, state_ids, state, event_auth) other servers made to our listener, by endpoint and outcome.",
		}, []string{"endpoint", "outcome"})
		m.ServedEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomsync_served_events_total",
			Help: "Events served to other servers (in full or redacted), by endpoint.",
		}, []string{"endpoint"})
		m.ServeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "roomsync_serve_duration_seconds",
			Help:    "Time to answer a history request, by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10),
		}, []string{"endpoint"})
		ctrlmetrics.Registry.MustRegister(m.EventsStored, m.EventsRejected, m.Requests, m.RequestDuration,
			m.RoomEvents, m.RoomGaps, m.RoomUnfillable, m.RoomConverged, m.RoomLastSync, m.PeerHealthy,
			m.ReconcileSeconds, m.RoomJoined, m.StoreFull, m.Transactions, m.PDUsReceived, m.LiveLatency,
			m.ServedRequests, m.ServedEvents, m.ServeDuration)
		// Served from the start at zero, so that a rate over them is defined before the first
		// request, and the dashboard and alerts find them on a replica nobody has asked yet.
		for _, e := range federation.HistoryEndpoints {
			for _, o := range []federation.Outcome{federation.OutcomeOK, federation.OutcomeServerError} {
				m.ServedRequests.WithLabelValues(e, string(o))
			}
			m.ServedEvents.WithLabelValues(e)
			m.ServeDuration.WithLabelValues(e)
		}
		registered = m
	})
	return registered
}

// Observer returns a resolver.Observer that feeds these series.
func (m *Metrics) Observer() resolver.Observer { return metricsObserver{m} }

type metricsObserver struct{ m *Metrics }

func (o metricsObserver) Request(peer, endpoint string, outcome federation.Outcome, took time.Duration) {
	o.m.Requests.WithLabelValues(peer, endpoint, string(outcome)).Inc()
	o.m.RequestDuration.WithLabelValues(peer, endpoint).Observe(took.Seconds())
}

// ServeObserver returns a federation.ServeObserver that feeds the serving series.
func (m *Metrics) ServeObserver() federation.ServeObserver { return metricsObserver{m} }

func (o metricsObserver) Served(endpoint string, outcome federation.Outcome, events int, took time.Duration) {
	o.m.ServedRequests.WithLabelValues(endpoint, string(outcome)).Inc()
	if events > 0 {
		o.m.ServedEvents.WithLabelValues(endpoint).Add(float64(events))
	}
	o.m.ServeDuration.WithLabelValues(endpoint).Observe(took.Seconds())
}

func (o metricsObserver) Stored(roomID string, events int) {
	o.m.EventsStored.WithLabelValues(roomID).Add(float64(events))
}

func (o metricsObserver) Rejected(roomID string, reason resolver.RejectReason, count int) {
	o.m.EventsRejected.WithLabelValues(roomID, string(reason)).Add(float64(count))
}

// setRoom publishes a room's state after a pass.
func (m *Metrics) setRoom(namespace, name string, st roomsyncv1alpha1.RoomStatus) {
	labels := prometheus.Labels{"namespace": namespace, "name": name, "room": st.ID}
	m.RoomEvents.With(labels).Set(float64(st.Events))
	m.RoomGaps.With(labels).Set(float64(st.Gaps))
	m.RoomUnfillable.With(labels).Set(float64(st.Unfillable))
	converged := 0.0
	if st.Converged {
		converged = 1
	}
	m.RoomConverged.With(labels).Set(converged)
	joined := 0.0
	if st.Membership == resolver.MembershipJoined {
		joined = 1
	}
	m.RoomJoined.With(labels).Set(joined)
	// A room no pass has reached yet has no timestamp: a zero would read as 56 years stale.
	if st.LastSyncTime != nil {
		m.RoomLastSync.With(labels).Set(float64(st.LastSyncTime.Unix()))
	}
}

// setPeer publishes a peer's health after a pass.
func (m *Metrics) setPeer(namespace, name string, p resolver.PeerStatus) {
	healthy := 0.0
	if p.Healthy {
		healthy = 1
	}
	m.PeerHealthy.WithLabelValues(namespace, name, p.ServerName).Set(healthy)
}

// setStoreFull publishes whether a pass found the store full, from the error decide returned
// (a waiting error with the reason StoreFull): 0 after every other pass, so that the series
// exists from a RoomSync's first pass on.
func (m *Metrics) setStoreFull(namespace, name string, err error) {
	full := 0.0
	if w, ok := asWaiting(err); ok && w.Reason == roomsyncv1alpha1.ReasonStoreFull {
		full = 1
	}
	m.StoreFull.WithLabelValues(namespace, name).Set(full)
}

// forget drops a RoomSync's series, with its rooms' and peers' (deleted, or the room or peer
// left its spec).
func (m *Metrics) forget(namespace, name string) {
	labels := prometheus.Labels{"namespace": namespace, "name": name}
	for _, g := range []*prometheus.GaugeVec{m.RoomEvents, m.RoomGaps, m.RoomUnfillable, m.RoomConverged,
		m.RoomLastSync, m.PeerHealthy, m.RoomJoined, m.StoreFull} {
		g.DeletePartialMatch(labels)
	}
}

// received counts a transaction we took and its PDUs' outcomes (results: event ID → error
// text, "" for accepted), with their latency.
func (m *Metrics) received(origin string, pdus []json.RawMessage, results map[string]string, now time.Time) {
	m.Transactions.WithLabelValues(origin).Inc()
	accepted := 0
	for _, outcome := range results {
		if outcome == "" {
			accepted++
		}
	}
	m.PDUsReceived.WithLabelValues("accepted").Add(float64(accepted))
	m.PDUsReceived.WithLabelValues("refused").Add(float64(len(pdus) - accepted))
	// The results are keyed by event ID, which a PDU of room version 3 on does not carry:
	// the latency is taken from transactions whose PDUs were all accepted.
	if accepted != len(pdus) {
		return
	}
	for _, pdu := range pdus {
		if ts := gjson.GetBytes(pdu, "origin_server_ts").Int(); ts > 0 {
			if d := now.Sub(time.UnixMilli(ts)); d >= 0 {
				m.LiveLatency.Observe(d.Seconds())
			}
		}
	}
}
