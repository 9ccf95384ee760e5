// Package fixturepeer is an in-process Matrix federation peer for fast tests of the resolver.
//
// It has two halves:
//
//   - [Generate] builds a synthetic room: a DAG of real, signed PDUs (mautrix's federation/pdu
//     does the hashing, event IDs and signing) sent by users on several origin servers, with
//     forks, merges, long linear stretches and member joins. It is deterministic for a seed.
//   - [Start] serves the Matrix server-server API for such a room over TLS on 127.0.0.1 from
//     a subset of the DAG (a [Hold]), with faults (5xx, 429, hangs, truncated or huge bodies,
//     floods of tiny PDUs, PDUs over the spec's size) and lies (wrong, foreign, stripped,
//     badly signed or mis-identified events) that can be switched while the peer runs, and
//     per-endpoint request counters. It answers /state_ids and /state with the room state
//     before the event, as Synapse, or after it, as Dendrite ([WithStateAfter]).
//
// Origin servers are named by IP literals on closed loopback ports ("127.0.0.1:1", see
// [DefaultOrigins]): asking one directly for its key fails at once and without any DNS
// lookup, so a resolver falls back on the peers, which serve every origin's key as notaries
// (self-signed by the origin and signed by the peer). Origin keys
// are derived from the origin's name ([OriginKey]), so every room and every peer agrees on
// them.
//
// A peer's own server name is "127.0.0.1:<port>" by default, and [Peer.URL] is its
// "https://127.0.0.1:<port>" base URL with a self-signed certificate: give the resolver the
// pair as an explicit endpoint with TLS verification off. [NewClient] builds a mautrix
// federation client routed that way, for tests that talk to peers directly.
//
// Membership: by default a peer serves history to any server, as Dendrite v0.13.8 does.
// [WithMembersOnly] (or [StartSynapseLike]) makes it refuse servers that are not in the room,
// as Synapse does, and its send_join lets a server in: it checks the join as a resident
// server does (the join's signature only when the test gives the peer the joiner's key, see
// [WithJoinKey]), records the server as joined and answers the room state and auth chain. The
// join itself never enters the room: generated rooms are immutable.
//
// What a resolver can possibly fetch from a set of peers is [Reachable]: the events reached
// by walking prev_events back from the peers' heads through events that some peer holds;
// prev_events that no peer holds are the unfillable gaps.
package fixturepeer
