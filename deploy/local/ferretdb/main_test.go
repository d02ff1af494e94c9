package main

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

func TestIndexFileNeverCreatesADatabase(t *testing.T) {
	gone := filepath.Join(t.TempDir(), "dropped.sqlite")
	if err := indexFile(context.Background(), gone); err == nil {
		t.Fatal("indexing a missing database succeeded")
	}
	if matches, _ := filepath.Glob(gone + "*"); len(matches) > 0 {
		t.Fatalf("indexing a missing database created %v", matches)
	}
}

func TestRemoveEmptyDatabasesKeepsTheOthers(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.sqlite")
	for _, path := range []string{empty, empty + "-wal", empty + "-shm"} {
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	full := filepath.Join(dir, "full.sqlite")
	db, err := sql.Open("sqlite", "file:"+full)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = db.Exec("CREATE TABLE _ferretdb_collections (name TEXT)"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	removeEmptyDatabases(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))

	if matches, _ := filepath.Glob(empty + "*"); len(matches) > 0 {
		t.Errorf("left behind %v", matches)
	}
	if _, err = os.Stat(full); err != nil {
		t.Errorf("removed a database with a table: %v", err)
	}
}
