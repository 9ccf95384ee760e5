package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migration is one step of the schema. Steps are never edited once released: a change to the
// schema is a new step with the next version.
type migration struct {
	version    int
	name       string
	statements []string
}

// migrations are applied in order on open. Timestamps are Unix milliseconds in BIGINT columns
// (Matrix's own unit, and free of driver-specific time handling); 0 means "never".
var migrations = []migration{
	{
		version: 1,
		name:    "rooms, events, edges and extremities",
		statements: []string{
			// The counters are kept in the same transactions as the rows they count, so that
			// reading a room's figures costs the same for any room size.
			`CREATE TABLE rooms (
				room_id          TEXT PRIMARY KEY,
				room_version     TEXT NOT NULL DEFAULT '',
				create_event_id  TEXT NOT NULL DEFAULT '',
				event_count      BIGINT NOT NULL DEFAULT 0,
				redacted_count   BIGINT NOT NULL DEFAULT 0,
				min_depth        BIGINT NOT NULL DEFAULT 0,
				max_depth        BIGINT NOT NULL DEFAULT 0,
				forward_count    BIGINT NOT NULL DEFAULT 0,
				backward_count   BIGINT NOT NULL DEFAULT 0,
				unfillable_count BIGINT NOT NULL DEFAULT 0,
				created_at       BIGINT NOT NULL
			)`,
			`CREATE TABLE events (
				event_id         TEXT PRIMARY KEY,
				room_id          TEXT NOT NULL,
				depth            BIGINT NOT NULL,
				origin_server_ts BIGINT NOT NULL,
				type             TEXT NOT NULL,
				state_key        TEXT,
				sender           TEXT NOT NULL,
				origin           TEXT NOT NULL,
				prev_events      TEXT NOT NULL, -- JSON array of IDs, for reading; event_edges decides
				raw              {{BLOB}} NOT NULL,
				redacted         BOOLEAN NOT NULL,
				received_at      BIGINT NOT NULL
			)`,
			// Topological order, for streaming and paging a room.
			`CREATE INDEX events_room_depth ON events (room_id, depth, event_id)`,
			// One row per prev event of each held event, written with the event. Keyed for the
			// question the extremity updates ask: "does a held event list X as a prev?". An
			// event's own prevs are read from events.prev_events instead, which spares a second
			// index keyed by random event IDs, and so a third of the pages an insert dirties.
			`CREATE TABLE event_edges (
				room_id       TEXT NOT NULL,
				prev_event_id TEXT NOT NULL,
				event_id      TEXT NOT NULL,
				PRIMARY KEY (room_id, prev_event_id, event_id)
			){{WITHOUT_ROWID}}`,
			`CREATE TABLE forward_extremities (
				room_id  TEXT NOT NULL,
				event_id TEXT NOT NULL,
				PRIMARY KEY (room_id, event_id)
			){{WITHOUT_ROWID}}`,
			`CREATE TABLE backward_extremities (
				room_id           TEXT NOT NULL,
				event_id          TEXT NOT NULL,
				first_seen        BIGINT NOT NULL,
				attempts          INTEGER NOT NULL DEFAULT 0,
				last_error        TEXT NOT NULL DEFAULT '',
				last_attempt_at   BIGINT NOT NULL DEFAULT 0,
				next_attempt_at   BIGINT NOT NULL DEFAULT 0,
				unfillable        BOOLEAN NOT NULL DEFAULT FALSE,
				unfillable_reason TEXT NOT NULL DEFAULT '',
				min_child_depth   BIGINT NOT NULL,
				max_child_depth   BIGINT NOT NULL,
				PRIMARY KEY (room_id, event_id)
			){{WITHOUT_ROWID}}`,
			// The backfill order: deepest holes first, so a scan with a limit stops early.
			`CREATE INDEX backward_extremities_room_depth
				ON backward_extremities (room_id, max_child_depth DESC, event_id)`,
		},
	},
	{
		version: 2,
		name:    "newest child timestamp of backward extremities",
		statements: []string{
			// For a history bound by time: a hole whose children are all older than the bound
			// is not worth filling. Existing rows get the value their children imply.
			`ALTER TABLE backward_extremities ADD COLUMN max_child_ts BIGINT NOT NULL DEFAULT 0`,
			`UPDATE backward_extremities SET max_child_ts = COALESCE((
				SELECT MAX(c.origin_server_ts) FROM event_edges g JOIN events c ON c.event_id = g.event_id
				WHERE g.room_id = backward_extremities.room_id AND g.prev_event_id = backward_extremities.event_id), 0)`,
		},
	},
	{
		version: 3,
		name:    "verified server keys",
		statements: []string{
			// Keys the resolver verified, kept across restarts: events signed by a server that
			// has since gone away stay verifiable with the key seen while it was up.
			`CREATE TABLE server_keys (
				server_name TEXT NOT NULL,
				key_id      TEXT NOT NULL,
				verify_key  TEXT NOT NULL,
				valid_until BIGINT NOT NULL,
				updated_at  BIGINT NOT NULL,
				PRIMARY KEY (server_name, key_id)
			)`,
		},
	},
	{
		version: 4,
		name:    "our membership of rooms",
		statements: []string{
			// What roomsync's own users did in each room (joined, failed to join, left), as
			// the resolver did it: the membership policy acts on it, and status reports it.
			`CREATE TABLE memberships (
				room_id    TEXT NOT NULL,
				user_id    TEXT NOT NULL,
				membership TEXT NOT NULL,
				reason     TEXT NOT NULL DEFAULT '',
				event_id   TEXT NOT NULL DEFAULT '',
				updated_at BIGINT NOT NULL,
				PRIMARY KEY (room_id, user_id)
			)`,
			// The redacted copies of a room, for fetching them again in full after a join.
			`CREATE INDEX events_room_redacted ON events (room_id, redacted, depth, event_id)`,
		},
	},
	{
		version: 5,
		name:    "room state and authorization",
		statements: []string{
			// The state before and after each event, as state groups of its room (NULL until
			// computed), and the authorization rule the event broke ('' when it is accepted).
			`ALTER TABLE events ADD COLUMN state_before BIGINT`,
			`ALTER TABLE events ADD COLUMN state_after BIGINT`,
			`ALTER TABLE events ADD COLUMN rejected TEXT NOT NULL DEFAULT ''`,
			// What the state computation has left to do, in topological order.
			`CREATE INDEX events_room_without_state ON events (room_id, depth, event_id) WHERE state_before IS NULL`,
			`ALTER TABLE rooms ADD COLUMN rejected_count BIGINT NOT NULL DEFAULT 0`,
			// Numbers of the room's state groups, handed out in blocks (AllocateStateGroups).
			`ALTER TABLE rooms ADD COLUMN state_group_seq BIGINT NOT NULL DEFAULT 0`,
			// A state group is a room state shared by the events that have it: either whole
			// (prev_group NULL) or the entries that differ from prev_group, so that a state
			// change costs one row, not a copy of the state. chain counts the deltas down to
			// a whole one, which bounds the reads that rebuild a group.
			`CREATE TABLE state_groups (
				room_id    TEXT NOT NULL,
				group_no   BIGINT NOT NULL,
				prev_group BIGINT,
				chain      INTEGER NOT NULL,
				PRIMARY KEY (room_id, group_no)
			){{WITHOUT_ROWID}}`,
			// The state after an event the store does not hold, as a peer told it (/state_ids):
			// where a bounded history begins, the state the oldest events start from.
			`CREATE TABLE boundary_states (
				room_id    TEXT NOT NULL,
				event_id   TEXT NOT NULL,
				group_no   BIGINT NOT NULL,
				source     TEXT NOT NULL,
				fetched_at BIGINT NOT NULL,
				PRIMARY KEY (room_id, event_id)
			){{WITHOUT_ROWID}}`,
			// event_id '' removes the key from the state of prev_group.
			`CREATE TABLE state_entries (
				room_id   TEXT NOT NULL,
				group_no  BIGINT NOT NULL,
				type      TEXT NOT NULL,
				state_key TEXT NOT NULL,
				event_id  TEXT NOT NULL,
				PRIMARY KEY (room_id, group_no, type, state_key)
			){{WITHOUT_ROWID}}`,
		},
	},
	{
		version: 6,
		name:    "self-signed key responses of other servers",
		statements: []string{
			// The key responses servers signed themselves and gave us over verified TLS, byte
			// for byte, so that we can serve them as a notary (/_matrix/key/v2/query) once the
			// server is gone: a verifier needs the origin's own signature intact. A response
			// is told apart by the IDs of its verify_keys (key_ids, a JSON array of them
			// sorted): a rotated key's old responses stay, and still vouch for the old key.
			`CREATE TABLE server_key_responses (
				server_name TEXT NOT NULL,
				key_ids     TEXT NOT NULL,
				raw         {{BLOB}} NOT NULL,
				valid_until BIGINT NOT NULL,
				fetched_at  BIGINT NOT NULL,
				PRIMARY KEY (server_name, key_ids)
			)`,
		},
	},
	{
		version: 7,
		name:    "what each peer answered for each gap",
		statements: []string{
			// The forensics behind a gap that stays open: the latest answer of each peer asked
			// for it (or why it was not asked), one row per (gap, peer), replaced at each
			// attempt and removed with the gap when the event arrives.
			`CREATE TABLE gap_attempts (
				room_id      TEXT NOT NULL,
				event_id     TEXT NOT NULL,
				peer         TEXT NOT NULL,
				endpoint     TEXT NOT NULL,
				outcome      TEXT NOT NULL,
				error        TEXT NOT NULL DEFAULT '',
				attempted_at BIGINT NOT NULL,
				PRIMARY KEY (room_id, event_id, peer)
			){{WITHOUT_ROWID}}`,
		},
	},
	{
		version: 8,
		name:    "arrival order of events",
		statements: []string{
			// seq numbers a room's events in the order the store took them (SequencedEvent),
			// so that an export resumes with exactly what arrived since it ran, wherever it
			// sits in the DAG. The room's row keeps the last number handed out. Both are
			// written under the room's row lock, so numbers commit in order: a reader that
			// sees N as the room's last number sees every event numbered up to N.
			`ALTER TABLE events ADD COLUMN seq BIGINT NOT NULL DEFAULT 0`,
			`ALTER TABLE rooms ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0`,
			// Events already held are numbered in the order they were received (a redacted
			// copy upgraded since counts from its upgrade), topologically within a batch, as
			// new batches are.
			`UPDATE events SET seq = numbered.n FROM (
				SELECT event_id, ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY received_at, depth, event_id) AS n
				FROM events) AS numbered
			WHERE events.event_id = numbered.event_id`,
			`UPDATE rooms SET event_seq = COALESCE((SELECT MAX(seq) FROM events WHERE events.room_id = rooms.room_id), 0)`,
			// Unique: a number handed out twice would make an export skip or repeat an event.
			`CREATE UNIQUE INDEX events_room_seq ON events (room_id, seq)`,
		},
	},
	integerEventKeys,
}

// migrate applies the migrations the database lacks, all in one transaction: DDL is
// transactional in both SQLite and PostgreSQL, so a crash leaves the schema at a recorded
// version. Concurrent openers are serialised (see dialect.migrationLock), and the second one
// finds nothing left to do.
func migrate(ctx context.Context, db *sql.DB, d *dialect) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if d.migrationLock != "" {
		if _, err := tx.ExecContext(ctx, d.migrationLock); err != nil {
			return fmt.Errorf("migrate schema: lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at BIGINT NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrate schema: create schema_migrations: %w", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("migrate schema: read version: %w", err)
	}
	latest := migrations[len(migrations)-1].version
	if current > latest {
		return fmt.Errorf("migrate schema: the database is at version %d, newer than this roomsync knows (%d)", current, latest)
	}
	if current == latest {
		return nil // nothing to write: the rollback only ends the transaction
	}
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		for _, stmt := range m.statements {
			if _, err := tx.ExecContext(ctx, d.ddl(stmt)); err != nil {
				return fmt.Errorf("migrate schema to version %d (%s): %w", m.version, m.name, err)
			}
		}
		if _, err := tx.ExecContext(ctx,
			d.rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
			m.version, m.name, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("migrate schema: record version %d: %w", m.version, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate schema: commit: %w", err)
	}
	return nil
}

// checkSchema reports whether the schema is the one this roomsync knows, for a store opened
// read-only, which cannot migrate it.
func checkSchema(ctx context.Context, db *sql.DB) error {
	var current int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("read the schema version (is this a roomsync store?): %w", err)
	}
	latest := migrations[len(migrations)-1].version
	switch {
	case current < latest:
		return fmt.Errorf("the schema is at version %d, older than this roomsync's (%d): open the store read-write once (roomsync sync or the manager) to migrate it", current, latest)
	case current > latest:
		return fmt.Errorf("the schema is at version %d, newer than this roomsync knows (%d)", current, latest)
	}
	return nil
}
