// Command hala-ferretdb runs FerretDB v1 embedded, with its SQLite backend, as a
// local MongoDB stand-in for development and tests (see ../infra.sh).
//
// It embeds the library instead of installing FerretDB's own cmd/ferretdb because
// `go install` of that command yields a binary that panics at start (its version.txt
// is not part of the module zip). Telemetry is locked off for embedded use.
package main

import (
	"context"
	"flag"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("data-dir", "data", "directory for the SQLite databases (created if missing)")
	var level slog.Level // FerretDB logs every connection at INFO: default to WARN
	flag.TextVar(&level, "log-level", slog.LevelWarn, "FerretDB log level (debug, info, warn, error)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil)) // our own messages, INFO
	fail := func(msg string, err error) { log.Error(msg, "err", err); os.Exit(1) }

	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		fail("bad -data-dir", err)
	}
	if err = os.MkdirAll(dir, 0o755); err != nil {
		fail("cannot create data dir", err)
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		Handler:   "sqlite",
		SQLiteURL: (&url.URL{Scheme: "file", Path: dir + "/"}).String(),
	})
	if err != nil {
		fail("cannot start FerretDB", err)
	}

	// Run until SIGTERM/SIGINT; Run closes the listener, connections and SQLite files.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("listening", "uri", f.MongoDBURI(), "data_dir", dir)
	if err = f.Run(ctx); err != nil {
		fail("FerretDB stopped with an error", err)
	}
	log.Info("stopped cleanly")
}
