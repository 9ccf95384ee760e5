package store

// integerEventKeys keys events by an integer in arrival order instead of their ID, and edges
// by the integer key of the prev event where it is held.
//
// Event IDs are hashes, so an index keyed by them takes each new event on a random page: at a
// million events a room, a batch of 100 dirtied about 100 pages of the ID index and 120 of
// event_edges (keyed by the prev's ID), 16 KiB each, for 100 KiB of events, and SQLite wrote
// every one to the WAL at commit and again at the checkpoint; inserts fell from 11,000 to
// 6,000 events/s between an empty room and one of 500,000. Now the ID index is the one index
// with random keys. The rows and every other index take new events at their end: events by
// event_nid, event_edges by the prev's event_nid (a new event's prevs are recent events, or
// in a backfill the events of the same batch).
//
// A prev that is not held has no key yet: its edges are kept by its ID in gap_edges, a table
// as small as the room's gaps, and move to event_edges when the event arrives. Which events a
// new event fills is thus read from gap_edges, which the insert deletes from anyway.
var integerEventKeys = migration{
	version: 9,
	name:    "integer event keys in arrival order",
	statements: []string{
		// event_nid is SQLite's rowid (INTEGER PRIMARY KEY) or a PostgreSQL identity column.
		// AUTOINCREMENT: a key is never handed out twice, even after the newest event is
		// deleted (a repair), which spares every reader the question.
		`CREATE TABLE events_by_nid (
			event_nid        {{EVENT_KEY}},
			event_id         TEXT NOT NULL,
			room_id          TEXT NOT NULL,
			depth            BIGINT NOT NULL,
			origin_server_ts BIGINT NOT NULL,
			type             TEXT NOT NULL,
			state_key        TEXT,
			sender           TEXT NOT NULL,
			origin           TEXT NOT NULL,
			prev_events      TEXT NOT NULL,
			raw              {{BLOB}} NOT NULL,
			redacted         BOOLEAN NOT NULL,
			received_at      BIGINT NOT NULL,
			state_before     BIGINT,
			state_after      BIGINT,
			rejected         TEXT NOT NULL DEFAULT '',
			seq              BIGINT NOT NULL DEFAULT 0
		)`,
		// Held events take keys in the order they arrived, room by room.
		`INSERT INTO events_by_nid (event_id, room_id, depth, origin_server_ts, type, state_key, sender, origin,
			prev_events, raw, redacted, received_at, state_before, state_after, rejected, seq)
		SELECT event_id, room_id, depth, origin_server_ts, type, state_key, sender, origin,
			prev_events, raw, redacted, received_at, state_before, state_after, rejected, seq
		FROM events ORDER BY room_id, seq`,
		`DROP TABLE events`,
		`ALTER TABLE events_by_nid RENAME TO events`,
		// The indexes of the old table went with it: the same ones again, and the ID's.
		`CREATE UNIQUE INDEX events_event_id ON events (event_id)`,
		`CREATE INDEX events_room_depth ON events (room_id, depth, event_id)`,
		// Only the redacted copies are ever looked up: a partial index spares the others a
		// write. Its queries say "AND redacted" for the planners to see that it applies.
		`CREATE INDEX events_room_redacted ON events (room_id, depth, event_id) WHERE redacted`,
		`CREATE INDEX events_room_without_state ON events (room_id, depth, event_id) WHERE state_before IS NULL`,
		`CREATE UNIQUE INDEX events_room_seq ON events (room_id, seq)`,

		// The edges to held prevs: "which events list X as a prev" is a range on the key, as
		// before. The child is named by its ID, so that the edges of a lost event still say
		// which event it was.
		`CREATE TABLE event_edges_by_nid (
			room_id  TEXT NOT NULL,
			prev_nid BIGINT NOT NULL,
			event_id TEXT NOT NULL,
			PRIMARY KEY (room_id, prev_nid, event_id)
		){{WITHOUT_ROWID}}`,
		// The edges to prevs not held (in this room): the gaps' children.
		`CREATE TABLE gap_edges (
			room_id       TEXT NOT NULL,
			prev_event_id TEXT NOT NULL,
			event_id      TEXT NOT NULL,
			PRIMARY KEY (room_id, prev_event_id, event_id)
		){{WITHOUT_ROWID}}`,
		// Each edge is looked up once, in the order of the old key, which is the order of
		// the ID index; the edges to held prevs are then written in the order of their new
		// key, rather than at random.
		`CREATE TEMPORARY TABLE edge_split AS
			SELECT g.room_id, g.prev_event_id, g.event_id, p.event_nid AS prev_nid FROM event_edges g
			LEFT JOIN events p ON p.event_id = g.prev_event_id AND p.room_id = g.room_id`,
		`INSERT INTO event_edges_by_nid (room_id, prev_nid, event_id)
		SELECT room_id, prev_nid, event_id FROM edge_split WHERE prev_nid IS NOT NULL ORDER BY room_id, prev_nid, event_id`,
		`INSERT INTO gap_edges (room_id, prev_event_id, event_id)
		SELECT room_id, prev_event_id, event_id FROM edge_split WHERE prev_nid IS NULL`,
		`DROP TABLE edge_split`,
		`DROP TABLE event_edges`,
		`ALTER TABLE event_edges_by_nid RENAME TO event_edges`,
	},
}
