// Command ferretdb runs FerretDB with its SQLite backend for local development
// and tests. It wraps FerretDB's embeddable package because building
// cmd/ferretdb from the module cache panics on a missing version file.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listenAddr := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	sqliteURL := flag.String("sqlite-url", "file:data/", "SQLite database directory as a file: URI, ending in /")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	server, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listenAddr},
		Handler:   "sqlite",
		SQLiteURL: *sqliteURL,
	})
	if err != nil {
		log.Fatalf("ferretdb: failed to start: %v", err)
	}

	log.Printf("ferretdb: listening on %s, data in %s", *listenAddr, *sqliteURL)
	if err := server.Run(ctx); err != nil {
		log.Fatalf("ferretdb: stopped with error: %v", err)
	}
}
