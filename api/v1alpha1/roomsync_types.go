package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RoomSyncKind is the kind name of RoomSync objects.
const RoomSyncKind = "RoomSync"

// RoomSyncSpec declares which Matrix rooms to replicate into the cluster's event store and
// which peer homeservers to pull them from.
//
// The federation identity the operator signs its requests with (server name and signing key)
// belongs to the operator, not to a RoomSync: it is set by the manager's flags.
type RoomSyncSpec struct {
	// Rooms to replicate. Each room is pulled from the peers until the event store holds
	// every event the peers can give, back to the history bound.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=200
	// +listType=map
	// +listMapKey=id
	Rooms []Room `json:"rooms"`

	// Peers are the homeservers to pull events from, tried in order of health. Each must be in
	// the rooms (or be allowed to see their history) for its answers to be complete.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=serverName
	Peers []Peer `json:"peers"`

	// History bounds how far back each room is replicated.
	// +optional
	// +kubebuilder:default={mode: "Full"}
	History *History `json:"history,omitempty"`

	// Limits bound the size of federation requests and the work of one reconcile.
	// +optional
	// +kubebuilder:default={backfillLimit: 100, missingEventsLimit: 50, maxEventsPerReconcile: 10000}
	Limits *SyncLimits `json:"limits,omitempty"`

	// Membership says whether roomsync joins the rooms, and as whom. Synapse shows a room's
	// history only to servers in the room, and Dendrite shows a non-member's copy with the
	// content of events it may not see stripped: joining is how a replica gets it all.
	// +optional
	// +kubebuilder:default={join: "IfNeeded"}
	Membership *Membership `json:"membership,omitempty"`

	// Interval between two sync passes of a converged RoomSync, as a Go duration such as
	// `30s`, `5m` or `1h`. At least 10s. Unconverged RoomSyncs are retried sooner.
	// +optional
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern="^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s')",message="interval must be at least 10s"
	Interval *metav1.Duration `json:"interval,omitempty"`

	// Suspend stops all federation pulls for this RoomSync. Events already stored are kept.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// Room names a room to replicate.
type Room struct {
	// ID is the room ID: `!opaque:server.name` for room versions 1 to 11, `!hash` for 12.
	// +required
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^![!-~]+$`
	ID string `json:"id"`
}

// Peer is a homeserver to pull events from.
// +kubebuilder:validation:XValidation:rule="!has(self.url) || !self.url.startsWith('http://') || !has(self.insecureSkipTLSVerify) || !self.insecureSkipTLSVerify",message="insecureSkipTLSVerify applies only to TLS: url is plain http"
type Peer struct {
	// ServerName is the peer's Matrix server name: a DNS name, IPv4 address or bracketed
	// IPv6 address, with an optional port, for example `matrix.org` or `[::1]:8448`.
	// Without `url`, the peer is found by Matrix server discovery (.well-known, SRV).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^(\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z.-]{1,255})(:[0-9]{1,5})?$`
	// +kubebuilder:validation:XValidation:rule="!self.matches(':[0-9]+$') || int(self.substring(self.lastIndexOf(':') + 1)) <= 65535",message="port must be at most 65535"
	ServerName string `json:"serverName"`

	// URL is the base URL of the peer's federation API, for example
	// `https://synapse.matrix.svc:8448`: http or https, a host, an optional port from 1 to
	// 65535 and an optional path, with no query, fragment or credentials. It skips server
	// discovery, which suits in-cluster peers.
	//
	// Loopback and private addresses are contacted when the user named them: through this
	// url, or, without it, when the server name itself is an IP literal or the host name as
	// written here. Only addresses that .well-known or SRV delegation leads to are refused.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://`
	// +kubebuilder:validation:XValidation:rule="!isURL(self) || url(self).getPort() == '' || (size(url(self).getPort()) <= 5 && int(url(self).getPort()) >= 1 && int(url(self).getPort()) <= 65535)",message="url port must be 1 to 65535"
	// +kubebuilder:validation:XValidation:rule="!self.contains('?') && !self.contains('#')",message="url must not have a query or fragment"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^https?://[^/?#]*@')",message="url must not carry credentials"
	URL string `json:"url,omitempty"`

	// InsecureSkipTLSVerify accepts any TLS certificate from this peer, however it is reached:
	// through url or through server discovery. Every event's signature is still verified, but
	// this peer's own signing key then arrives over a channel anyone could answer: events of
	// this server are only as trustworthy as the network path, and its keys are used for the
	// session only, never kept in the store. It applies only to TLS, so it is refused with a
	// plain http:// url.
	// +optional
	InsecureSkipTLSVerify bool `json:"insecureSkipTLSVerify,omitempty"`
}

// JoinPolicy says when roomsync joins a room it replicates.
// +kubebuilder:validation:Enum=Never;IfNeeded;Always
type JoinPolicy string

const (
	// JoinNever pulls as a non-member: Synapse refuses, Dendrite strips what a non-member may
	// not see.
	JoinNever JoinPolicy = "Never"
	// JoinIfNeeded joins when a peer refuses us as a non-member (403 on a history endpoint)
	// or serves redacted copies of events that exist in full.
	JoinIfNeeded JoinPolicy = "IfNeeded"
	// JoinAlways joins every room at its first pass.
	JoinAlways JoinPolicy = "Always"
)

// Membership says whether roomsync joins the rooms, and as whom.
type Membership struct {
	// Join is `Never`, `IfNeeded` (the default) or `Always`.
	// +optional
	// +kubebuilder:default=IfNeeded
	Join JoinPolicy `json:"join,omitempty"`

	// User is the localpart of the user that joins: `roomsync` makes
	// `@roomsync:<the operator's server name>`. (Pattern and length: rules.go's
	// UserLocalpartPattern and UserLocalpartMaxLength.)
	// +optional
	// +kubebuilder:default=roomsync
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z0-9._=/+-]+$`
	User string `json:"user,omitempty"`
}

// HistoryMode says how far back a room is replicated.
// +kubebuilder:validation:Enum=Full;Bounded
type HistoryMode string

const (
	// HistoryFull replicates back to the room's m.room.create event.
	HistoryFull HistoryMode = "Full"
	// HistoryBounded replicates back to minDepth or since, whichever is reached first.
	HistoryBounded HistoryMode = "Bounded"
)

// History bounds how far back rooms are replicated.
// +kubebuilder:validation:XValidation:rule="self.mode != 'Bounded' || has(self.minDepth) || has(self.since)",message="history.mode Bounded needs minDepth or since"
// +kubebuilder:validation:XValidation:rule="self.mode != 'Full' || (!has(self.minDepth) && !has(self.since))",message="history.mode Full takes neither minDepth nor since"
type History struct {
	// Mode is `Full` (back to m.room.create) or `Bounded` (back to minDepth or since).
	// +optional
	// +kubebuilder:default=Full
	Mode HistoryMode `json:"mode,omitempty"`

	// MinDepth is the lowest event depth to replicate when mode is Bounded.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MinDepth *int64 `json:"minDepth,omitempty"`

	// Since is the oldest origin_server_ts to replicate when mode is Bounded.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// SyncLimits bound federation requests and the work of one reconcile.
// +kubebuilder:validation:XValidation:rule="self.maxEventsPerReconcile >= self.backfillLimit && self.maxEventsPerReconcile >= self.missingEventsLimit",message="maxEventsPerReconcile must be at least backfillLimit and missingEventsLimit"
type SyncLimits struct {
	// BackfillLimit is the `limit` of each /backfill request. Servers cap it themselves
	// (Synapse and Dendrite at 100).
	// +optional
	// +kubebuilder:default=100
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	BackfillLimit int32 `json:"backfillLimit,omitempty"`

	// MissingEventsLimit is the `limit` of each /get_missing_events request. Servers cap it
	// themselves (Synapse at 20).
	// +optional
	// +kubebuilder:default=50
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MissingEventsLimit int32 `json:"missingEventsLimit,omitempty"`

	// MaxEventsPerReconcile bounds the events one room may take in one pass, so one large
	// room cannot starve the others. The next pass goes on where this one stopped.
	// +optional
	// +kubebuilder:default=10000
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=1000000
	MaxEventsPerReconcile int32 `json:"maxEventsPerReconcile,omitempty"`
}

// RoomSyncStatus is the observed state of a RoomSync.
type RoomSyncStatus struct {
	// ObservedGeneration is the generation of the spec that the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions are Ready, Reconciling and Stalled, as kstatus reads them.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// LastHandledReconcileAt is the last value of the reconcile.roomsync.io/requestedAt
	// annotation that started a pass.
	// +optional
	LastHandledReconcileAt string `json:"lastHandledReconcileAt,omitempty"`

	// Summary adds up the rooms; the printer columns show it.
	// +optional
	Summary Summary `json:"summary,omitempty"`

	// Rooms is the state of each room in the event store.
	// +optional
	// +listType=map
	// +listMapKey=id
	Rooms []RoomStatus `json:"rooms,omitempty"`

	// Peers is what the operator last saw of each peer.
	// +optional
	// +listType=map
	// +listMapKey=serverName
	Peers []PeerStatus `json:"peers,omitempty"`
}

// Summary adds up the state of all rooms of a RoomSync.
type Summary struct {
	// Rooms is the number of rooms in the spec.
	Rooms int32 `json:"rooms"`
	// ConvergedRooms is the number of rooms whose store holds every event the peers gave.
	ConvergedRooms int32 `json:"convergedRooms"`
	// Events is the number of events stored, over all rooms.
	Events int64 `json:"events"`
	// Gaps is the number of missing events known (backward extremities and unseen peer
	// heads), over all rooms.
	Gaps int64 `json:"gaps"`
	// Unfillable is the number of gaps that no peer could fill at the last attempt.
	Unfillable int64 `json:"unfillable"`
}

// RoomStatus is the state of one room in the event store.
type RoomStatus struct {
	// ID is the room ID.
	ID string `json:"id"`
	// RoomVersion is the room version, from the m.room.create event or a peer.
	// +optional
	RoomVersion string `json:"roomVersion,omitempty"`
	// Events is the number of events stored for the room.
	Events int64 `json:"events"`
	// ForwardExtremities is the number of stored events that no stored event follows.
	ForwardExtremities int32 `json:"forwardExtremities"`
	// Gaps is the number of events referenced but not stored, and peer heads not stored.
	Gaps int64 `json:"gaps"`
	// Unfillable is the number of gaps that every peer answered for and none could fill at
	// the last attempt.
	Unfillable int64 `json:"unfillable"`
	// WaitingFor says what the room's other gaps wait for: peers that did not answer, such as
	// `peer a.example (unreachable)`, and signing keys that could not be fetched, such as
	// `the signing key of a.example`. They are tried again as soon as a peer answers again.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	WaitingFor []string `json:"waitingFor,omitempty"`
	// EarliestDepth is the lowest depth stored.
	// +optional
	EarliestDepth int64 `json:"earliestDepth,omitempty"`
	// LatestDepth is the highest depth stored.
	// +optional
	LatestDepth int64 `json:"latestDepth,omitempty"`
	// Converged is true when every peer head is stored and no gap remains within the
	// history bound.
	Converged bool `json:"converged"`
	// LastSyncTime is when the last sync pass of this room ended.
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`
	// Membership is our user's membership of the room: `Joined`, `NotJoined`, `Invited`
	// (a member invited us; the join follows), `JoinFailed` (with membershipReason) or `Left`.
	// +optional
	// +kubebuilder:validation:Enum=Joined;NotJoined;Invited;JoinFailed;Left
	Membership string `json:"membership,omitempty"`
	// MembershipReason says why a join failed, why a peer refused us as a non-member, or who
	// invited us.
	// +optional
	MembershipReason string `json:"membershipReason,omitempty"`
	// Redacted is the number of events held only in redacted form (the copy a non-member
	// was shown).
	// +optional
	Redacted int64 `json:"redacted,omitempty"`
	// Rejected is the number of events that broke the authorization rules: kept, flagged,
	// and never part of the room state.
	// +optional
	Rejected int64 `json:"rejected,omitempty"`
	// StateFrom says whose word the room state at the start of a bounded history is: the
	// peer that answered /state_ids, at which event, and when.
	// +optional
	// +kubebuilder:validation:MaxItems=5
	StateFrom []string `json:"stateFrom,omitempty"`
	// LastError is the last error of a sync pass of this room, empty after a clean pass.
	// +optional
	LastError string `json:"lastError,omitempty"`
}

// PeerStatus is what the operator last saw of a peer.
type PeerStatus struct {
	// ServerName is the peer's server name.
	ServerName string `json:"serverName"`
	// Healthy is false while the peer is backed off after errors.
	Healthy bool `json:"healthy"`
	// LastError is the peer's last error, empty after a successful request.
	// +optional
	LastError string `json:"lastError,omitempty"`
	// LastContact is when the peer last answered a request successfully.
	// +optional
	LastContact *metav1.Time `json:"lastContact,omitempty"`
}

// RoomSync replicates Matrix rooms from peer homeservers into the cluster's event store.
//
// Deleting a RoomSync stops the pulls and keeps the stored events: other RoomSyncs may name
// the same rooms, and an archive should not vanish with the object that filled it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// The short name is rms, not rs: kubectl resolves rs to the built-in ReplicaSets first.
// +kubebuilder:resource:shortName=rms,categories=matrix
// +kubebuilder:printcolumn:name="Rooms",type=integer,JSONPath=`.status.summary.rooms`
// +kubebuilder:printcolumn:name="Converged",type=integer,JSONPath=`.status.summary.convergedRooms`
// +kubebuilder:printcolumn:name="Events",type=integer,JSONPath=`.status.summary.events`
// +kubebuilder:printcolumn:name="Gaps",type=integer,JSONPath=`.status.summary.gaps`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RoomSync struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec RoomSyncSpec `json:"spec"`
	// +optional
	Status RoomSyncStatus `json:"status,omitempty"`
}

// RoomSyncList is a list of RoomSyncs.
//
// +kubebuilder:object:root=true
type RoomSyncList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RoomSync `json:"items"`
}

func init() {
	SchemeBuilder.Register(&RoomSync{}, &RoomSyncList{})
}
