// Command hala-ferretdb runs FerretDB v1 embedded, as a local MongoDB stand-in for development
// and tests (see ../infra.sh), on either of FerretDB's backends: SQLite files in -data-dir
// (-backend sqlite) or a PostgreSQL database (-backend postgresql -postgresql-url URL).
//
// It embeds the library instead of installing FerretDB's own cmd/ferretdb because
// `go install` of that command yields a binary that panics at start (its version.txt
// is not part of the module zip). Telemetry is locked off for embedded use.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	_ "modernc.org/sqlite" // the driver FerretDB itself uses, for idIndexer
)

// synchronous(normal) in WAL mode: a commit is written to the WAL but not fsynced (the WAL is
// synced at each checkpoint). A killed process loses nothing; a power cut may lose the last
// commits. That is MongoDB's own default (w:1 acknowledges before the journal's periodic
// flush). SQLite's default, FULL, fsyncs every commit: most of FerretDB's CPU per write here.
const sqlitePragmas = "_pragma=synchronous(normal)"

// gcPercent is the Go collector's target (GOGC) unless the environment sets GOGC. FerretDB
// allocates a decoded document per row it reads and per value it translates; at Go's default
// (100) its collector took ~10 % of its CPU under the pipeline, and its allocation assists more.
// At 400, CPU per command fell by 10-20 % (insert_many of 50: 3.3 -> 2.8 ms; find_one by _id:
// 0.38 -> 0.30 ms; bulk_write of 50 $set: 31 -> 27 ms) for 72 -> 83 MB of peak RSS
// (deploy/local/NOTES.md, "FerretDB's cost per command").
const gcPercent = 400

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	backend := flag.String("backend", "sqlite", "FerretDB's backend: sqlite or postgresql")
	dataDir := flag.String("data-dir", "data", "sqlite: directory for the SQLite databases (created if missing)")
	pgURL := flag.String("postgresql-url", "", "postgresql: the database's URL, e.g. "+
		"postgres:///ferretdb?host=/run/dir (pgx syntax; a unix socket directory as host)")
	var level slog.Level // FerretDB logs every connection at INFO: default to WARN
	flag.TextVar(&level, "log-level", slog.LevelWarn, "FerretDB log level (debug, info, warn, error)")
	debugAddr := flag.String("debug-addr", "", "loopback address for Go's pprof handlers "+
		"(/debug/pprof/), e.g. 127.0.0.1:6060; off when empty (the default)")
	flag.Parse()

	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)) // our own messages, INFO
	fail := func(msg string, err error) { log.Error(msg, "err", err); os.Exit(1) }

	config := &ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: *listen},
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		Handler:  *backend,
	}
	var dir string // sqlite only
	switch *backend {
	case "sqlite":
		var err error
		if dir, err = filepath.Abs(*dataDir); err != nil {
			fail("bad -data-dir", err)
		}
		if err = os.MkdirAll(dir, 0o755); err != nil {
			fail("cannot create data dir", err)
		}
		cleanDataDir(dir, log)
		config.SQLiteURL = (&url.URL{Scheme: "file", Path: dir + "/", RawQuery: sqlitePragmas}).String()
	case "postgresql":
		if *pgURL == "" {
			fail("bad flags", errors.New("-backend postgresql needs -postgresql-url"))
		}
		config.PostgreSQLURL = *pgURL
	default:
		fail("bad flags", fmt.Errorf("-backend must be sqlite or postgresql, got %q", *backend))
	}

	if *debugAddr != "" {
		if err := serveDebug(*debugAddr, log); err != nil {
			fail("bad -debug-addr", err)
		}
	}

	f, err := ferretdb.New(config)
	if err != nil {
		fail("cannot start FerretDB", err)
	}

	// Run until SIGTERM/SIGINT; Run closes the listener, connections and SQLite files.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *backend == "sqlite" {
		go idIndexer(ctx, dir, log)
	}
	log.Info("listening", "uri", f.MongoDBURI(), "backend", *backend, "data_dir", dir)
	if err = f.Run(ctx); err != nil {
		fail("FerretDB stopped with an error", err)
	}
	log.Info("stopped cleanly")
}

// serveDebug serves Go's profiler (net/http/pprof) on a loopback address only: a profile shows
// the queries' data, and the handlers have no authentication.
func serveDebug(addr string, log *slog.Logger) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%q is not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("pprof listening", "addr", ln.Addr().String())
	go func() {
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		if err := srv.Serve(ln); err != nil {
			log.Warn("pprof server stopped", "err", err)
		}
	}()
	return nil
}

// idIndexer works around FerretDB v1.24's SQLite backend: it indexes `_id` on the expression
// `_ferretdb_sjson->"_id"`, but its queries filter on `_ferretdb_sjson->'$._id'`, which SQLite's
// planner does not match to that index, so every update or delete by _id scans the whole
// collection (seen: 48 ms per update at 5,000 documents, growing linearly). Every second this
// adds an index on the expression the queries use to each collection table it has not seen yet.
func idIndexer(ctx context.Context, dir string, log *slog.Logger) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"))
		for _, file := range files {
			if err := indexFile(ctx, file); err != nil {
				log.Debug("id index pass skipped a file", "file", file, "err", err)
			}
		}
	}
}

func indexFile(ctx context.Context, file string) error {
	// mode=rw, never create: a database FerretDB drops between our glob and this open would
	// otherwise come back as an empty file, which FerretDB refuses at its next start.
	db, err := sql.Open("sqlite", "file:"+file+"?mode=rw&_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer db.Close()
	// Tables without our index: new ones, and ones dropped and created again under the same name.
	rows, err := db.QueryContext(ctx, `SELECT table_name FROM _ferretdb_collections c
		WHERE NOT EXISTS (SELECT 1 FROM sqlite_master m
		                  WHERE m.type = 'index' AND m.name = c.table_name || '__hala_id')`)
	if err != nil {
		return err // a database file FerretDB is still creating
	}
	var tables []string
	for rows.Next() {
		var table string
		if err = rows.Scan(&table); err == nil {
			tables = append(tables, table)
		}
	}
	rows.Close()
	for _, table := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`,
			table+"__hala_id", table)
		if _, err = db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// cleanDataDir removes what FerretDB refuses to start next to, before it opens anything:
//   - database files with no table at all ("no such table: _ferretdb_collections"); older
//     builds of idIndexer could leave one behind by opening a database FerretDB had just
//     dropped. An empty file holds nothing to lose.
//   - -wal/-shm files whose database file is gone (a database dropped while another connection
//     still had it open): SQLite would replay that old WAL into the next database created under
//     the same name.
func cleanDataDir(dir string, log *slog.Logger) {
	remove := func(path string) {
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			log.Warn("cannot remove a leftover database file", "file", path, "err", err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"))
	for _, file := range files {
		if tables, err := countTables(file); err == nil && tables == 0 {
			for _, path := range []string{file, file + "-wal", file + "-shm"} {
				remove(path)
			}
			log.Info("removed an empty database file", "file", file)
		}
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		sidecars, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"+suffix))
		for _, sidecar := range sidecars {
			if _, err := os.Stat(strings.TrimSuffix(sidecar, suffix)); os.IsNotExist(err) {
				remove(sidecar)
				log.Info("removed a file whose database is gone", "file", sidecar)
			}
		}
	}
}

func countTables(file string) (int, error) {
	db, err := sql.Open("sqlite", "file:"+file+"?mode=rw")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var tables int
	err = db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table'`).Scan(&tables)
	return tables, err
}
