package postgres

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// Enqueue sends COMMIT as a statement of its last batch; Postgres answers a
// COMMIT of a failed transaction with the tag ROLLBACK and no error, which
// must not pass for a commit.
func TestCommittedChecksTheTag(t *testing.T) {
	if err := committed(pgconn.NewCommandTag("COMMIT")); err != nil {
		t.Fatalf("COMMIT: %v", err)
	}
	if err := committed(pgconn.NewCommandTag("ROLLBACK")); !errors.Is(err, errNotCommitted) {
		t.Fatalf("ROLLBACK: %v, want errNotCommitted", err)
	}
}
