package store

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
)

// schemaShape is what a schema is made of, as the catalog says: tables with their columns,
// and the indexes the migrations name (not those behind primary keys, which each dialect
// names its own way), with their tables.
type schemaShape struct {
	columns map[string][]string // table → columns
	indexes map[string]string   // index → table
}

// compareSchema compares the schema with the one the migrations up to its recorded version
// make. That one is built afresh in a scratch in-memory SQLite database rather than written
// down a second time, so it can never fall behind a new migration; tables, columns and
// indexes have the same names in both dialects.
func (s *sqlStore) compareSchema(ctx context.Context, c *DatabaseCheck) error {
	have, err := s.readShape(ctx)
	if err != nil {
		return s.damageOr(ctx, c, "read the schema from the catalog", err)
	}
	if _, ok := have.columns["schema_migrations"]; !ok {
		c.Schema = append(c.Schema, "table schema_migrations is missing: this is no roomsync store, or its schema was lost")
		c.MissingTables = append(c.MissingTables, "schema_migrations")
		return nil
	}
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&c.SchemaVersion); err != nil {
		return s.damageOr(ctx, c, "read the schema version", err)
	}
	latest := migrations[len(migrations)-1].version
	if c.SchemaVersion > latest {
		c.Schema = append(c.Schema, fmt.Sprintf("the schema is at version %d, newer than this roomsync knows (%d): use a newer roomsync", c.SchemaVersion, latest))
		return nil
	}
	want, err := shapeAtVersion(ctx, c.SchemaVersion)
	if err != nil {
		return fmt.Errorf("build the schema of version %d: %w", c.SchemaVersion, err)
	}
	for _, table := range slices.Sorted(maps.Keys(want.columns)) {
		cols, ok := have.columns[table]
		if !ok {
			c.Schema = append(c.Schema, fmt.Sprintf("table %s is missing", table))
			c.MissingTables = append(c.MissingTables, table)
			continue
		}
		for _, col := range want.columns[table] {
			if !slices.Contains(cols, col) {
				c.Schema = append(c.Schema, fmt.Sprintf("column %s.%s is missing", table, col))
			}
		}
	}
	for _, index := range slices.Sorted(maps.Keys(want.indexes)) {
		_, tableHeld := have.columns[want.indexes[index]]
		if _, ok := have.indexes[index]; !ok && tableHeld {
			c.Schema = append(c.Schema, fmt.Sprintf("index %s on %s is missing", index, want.indexes[index]))
		}
	}
	if s.d == postgresDialect {
		invalid, err := s.invalidIndexes(ctx)
		if err != nil {
			return s.damageOr(ctx, c, "read the validity of indexes", err)
		}
		for _, index := range invalid {
			c.Schema = append(c.Schema, fmt.Sprintf("index %s is invalid or not ready (a failed build?): REINDEX it", index))
		}
	}
	return nil
}

// shapeAtVersion applies the migrations up to version to a scratch in-memory SQLite database
// and reads its shape.
func shapeAtVersion(ctx context.Context, version int) (schemaShape, error) {
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		return schemaShape{}, err
	}
	defer db.Close()
	// One connection: each in-memory connection is a database of its own.
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `CREATE TABLE schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		return schemaShape{}, err
	}
	for _, m := range migrations {
		if m.version > version {
			break
		}
		for _, stmt := range m.statements {
			if _, err := db.ExecContext(ctx, sqliteDialect.ddl(stmt)); err != nil {
				return schemaShape{}, fmt.Errorf("migration %d: %w", m.version, err)
			}
		}
	}
	scratch := &sqlStore{d: sqliteDialect, db: db, wdb: db}
	return scratch.readShape(ctx)
}

// readShape reads the store's tables, columns and named indexes from the catalog.
func (s *sqlStore) readShape(ctx context.Context) (schemaShape, error) {
	shape := schemaShape{columns: map[string][]string{}, indexes: map[string]string{}}
	columnsQuery := `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`
	indexesQuery := `SELECT indexname, tablename FROM pg_indexes WHERE schemaname = current_schema()`
	if s.d == sqliteDialect {
		columnsQuery = `SELECT m.name, c.name FROM sqlite_master m JOIN pragma_table_info(m.name) c
			WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, c.cid`
		// Indexes behind primary keys and UNIQUE constraints have no SQL of their own.
		indexesQuery = `SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL`
	}
	err := s.scanPairs(ctx, columnsQuery, func(table, column string) {
		shape.columns[table] = append(shape.columns[table], column)
	})
	if err != nil {
		return shape, fmt.Errorf("read columns: %w", err)
	}
	err = s.scanPairs(ctx, indexesQuery, func(index, table string) { shape.indexes[index] = table })
	if err != nil {
		return shape, fmt.Errorf("read indexes: %w", err)
	}
	return shape, nil
}

// tables lists the store's tables, sorted.
func (s *sqlStore) tables(ctx context.Context) ([]string, error) {
	shape, err := s.readShape(ctx)
	if err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(shape.columns)), nil
}

// invalidIndexes lists PostgreSQL's indexes of the schema that are not valid or not ready:
// what a CREATE INDEX CONCURRENTLY that failed leaves behind, which the planner ignores.
func (s *sqlStore) invalidIndexes(ctx context.Context) ([]string, error) {
	var out []string
	err := s.scanPairs(ctx, `SELECT c.relname, t.relname FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = current_schema() AND NOT (i.indisvalid AND i.indisready) ORDER BY c.relname`,
		func(index, _ string) { out = append(out, index) })
	return out, err
}

// scanPairs runs a query of two text columns and calls fn with each row.
func (s *sqlStore) scanPairs(ctx context.Context, q string, fn func(a, b string)) error {
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var a, b string
		if err := rows.Scan(&a, &b); err != nil {
			return err
		}
		fn(a, b)
	}
	return rows.Err()
}
