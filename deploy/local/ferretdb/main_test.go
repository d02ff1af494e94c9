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

func TestCleanDataDirRemovesWhatFerretDBRefusesAndKeepsTheRest(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.sqlite")
	orphan := filepath.Join(dir, "dropped.sqlite")
	for _, path := range []string{empty, empty + "-wal", empty + "-shm", orphan + "-wal", orphan + "-shm"} {
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
	fullWal := full + "-wal"
	if err = os.WriteFile(fullWal, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	cleanDataDir(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))

	for _, prefix := range []string{empty, orphan} {
		if matches, _ := filepath.Glob(prefix + "*"); len(matches) > 0 {
			t.Errorf("left behind %v", matches)
		}
	}
	for _, kept := range []string{full, fullWal} {
		if _, err = os.Stat(kept); err != nil {
			t.Errorf("removed %s: %v", kept, err)
		}
	}
}

func TestServeDebugRefusesANonLoopbackAddress(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0", "example.com:0", "nonsense"} {
		if err := serveDebug(addr, log); err == nil {
			t.Errorf("serveDebug(%q) accepted a non-loopback address", addr)
		}
	}
	if err := serveDebug("127.0.0.1:0", log); err != nil {
		t.Errorf("serveDebug on loopback: %v", err)
	}
}
