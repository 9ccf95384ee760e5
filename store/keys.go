package store

import (
	"context"
	"fmt"
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
