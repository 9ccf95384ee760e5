package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

func (s *sqlStore) SaveServerKeys(ctx context.Context, keys []ServerKey) error {
	if len(keys) == 0 {
		return nil
	}
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("save server keys: %w", withContextErr(ctx, err))
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	// ON CONFLICT … DO UPDATE is spelled the same in SQLite (3.24+) and PostgreSQL.
	q := s.d.rebind(`INSERT INTO server_keys (server_name, key_id, verify_key, valid_until, updated_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (server_name, key_id) DO UPDATE SET
			valid_until = excluded.valid_until, updated_at = excluded.updated_at
		WHERE server_keys.verify_key = excluded.verify_key AND excluded.valid_until > server_keys.valid_until`)
	now := time.Now().UnixMilli()
	for _, k := range keys {
		if k.ServerName == "" || k.KeyID == "" || k.Key == "" {
			return fmt.Errorf("save server keys: incomplete key %+v", k)
		}
		if _, err := tx.ExecContext(ctx, q, k.ServerName, k.KeyID, k.Key, k.ValidUntil.UnixMilli(), now); err != nil {
			return fmt.Errorf("save key %s of %s: %w", k.KeyID, k.ServerName, withContextErr(ctx, err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("save server keys: %w", withContextErr(ctx, err))
	}
	return nil
}

func (s *sqlStore) ServerKeys(ctx context.Context, serverName string) ([]ServerKey, error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind(`SELECT key_id, verify_key, valid_until FROM server_keys
		WHERE server_name = ? ORDER BY key_id`), serverName)
	if err != nil {
		return nil, fmt.Errorf("read keys of %s: %w", serverName, withContextErr(ctx, err))
	}
	defer rows.Close()
	var out []ServerKey
	for rows.Next() {
		k := ServerKey{ServerName: serverName}
		var until int64
		if err := rows.Scan(&k.KeyID, &k.Key, &until); err != nil {
			return nil, fmt.Errorf("read keys of %s: %w", serverName, err)
		}
		k.ValidUntil = time.UnixMilli(until)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read keys of %s: %w", serverName, err)
	}
	return out, nil
}

func (s *sqlStore) SaveServerKeyResponse(ctx context.Context, resp ServerKeyResponse) error {
	if resp.ServerName == "" || len(resp.KeyIDs) == 0 || !json.Valid(resp.Raw) {
		return fmt.Errorf("save key response of %q: incomplete (key IDs %q, %d bytes of JSON)", resp.ServerName, resp.KeyIDs, len(resp.Raw))
	}
	ids := slices.Clone(resp.KeyIDs)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	keyIDs, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("save key response of %s: %w", resp.ServerName, err)
	}
	fetched := resp.FetchedAt
	if fetched.IsZero() {
		fetched = time.Now()
	}
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("save key response of %s: %w", resp.ServerName, withContextErr(ctx, err))
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	// A response for the same keys replaces the one held unless it is valid for less long:
	// the server's later word, but never a replayed older one.
	if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO server_key_responses (server_name, key_ids, raw, valid_until, fetched_at)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (server_name, key_ids) DO UPDATE SET
			raw = excluded.raw, valid_until = excluded.valid_until, fetched_at = excluded.fetched_at
		WHERE excluded.valid_until >= server_key_responses.valid_until`),
		resp.ServerName, string(keyIDs), resp.Raw, resp.ValidUntil.UnixMilli(), fetched.UnixMilli()); err != nil {
		return fmt.Errorf("save key response of %s: %w", resp.ServerName, withContextErr(ctx, err))
	}
	if _, err := tx.ExecContext(ctx, s.d.rebind(`DELETE FROM server_key_responses WHERE server_name = ? AND key_ids NOT IN (
			SELECT key_ids FROM server_key_responses WHERE server_name = ?
			ORDER BY fetched_at DESC, valid_until DESC, key_ids LIMIT ?)`),
		resp.ServerName, resp.ServerName, MaxServerKeyResponses); err != nil {
		return fmt.Errorf("save key response of %s: trim: %w", resp.ServerName, withContextErr(ctx, err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("save key response of %s: %w", resp.ServerName, withContextErr(ctx, err))
	}
	return nil
}

func (s *sqlStore) ServerKeyResponses(ctx context.Context, serverName string) ([]ServerKeyResponse, error) {
	rows, err := s.db.QueryContext(ctx, s.d.rebind(`SELECT key_ids, raw, valid_until, fetched_at FROM server_key_responses
		WHERE server_name = ? ORDER BY valid_until DESC, key_ids`), serverName)
	if err != nil {
		return nil, fmt.Errorf("read key responses of %s: %w", serverName, withContextErr(ctx, err))
	}
	defer rows.Close()
	var out []ServerKeyResponse
	for rows.Next() {
		r := ServerKeyResponse{ServerName: serverName}
		var keyIDs string
		var until, fetched int64
		if err := rows.Scan(&keyIDs, &r.Raw, &until, &fetched); err != nil {
			return nil, fmt.Errorf("read key responses of %s: %w", serverName, err)
		}
		if err := json.Unmarshal([]byte(keyIDs), &r.KeyIDs); err != nil {
			return nil, fmt.Errorf("read key responses of %s: key IDs %q: %w", serverName, keyIDs, err)
		}
		r.ValidUntil, r.FetchedAt = time.UnixMilli(until), time.UnixMilli(fetched)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read key responses of %s: %w", serverName, err)
	}
	return out, nil
}
