package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"xcollect.dev/xcollect/storage"
)

// rosters implements storage.RosterStore on table roster.
type rosters struct{ s *Store }

const rosterColumns = `contact, name, subscription, ask, pending_in, groups`

func scanRosterItem(row pgx.CollectableRow) (storage.RosterItem, error) {
	var it storage.RosterItem
	err := row.Scan(&it.JID, &it.Name, &it.Subscription, &it.Ask, &it.PendingIn, &it.Groups)
	if len(it.Groups) == 0 {
		it.Groups = nil
	}
	return it, err
}

func (r rosters) GetRoster(ctx context.Context, owner string) ([]storage.RosterItem, error) {
	if err := r.s.check(); err != nil {
		return nil, err
	}
	rows, _ := r.s.pool.Query(ctx, `SELECT `+rosterColumns+` FROM roster WHERE owner = $1 ORDER BY contact COLLATE "C"`, owner)
	items, err := pgx.CollectRows(rows, scanRosterItem)
	return items, wrap(err, "get roster of %s", owner)
}

func (r rosters) GetRosterItem(ctx context.Context, owner, contact string) (storage.RosterItem, bool, error) {
	if err := r.s.check(); err != nil {
		return storage.RosterItem{}, false, err
	}
	rows, _ := r.s.pool.Query(ctx, `SELECT `+rosterColumns+` FROM roster WHERE owner = $1 AND contact = $2`, owner, contact)
	it, err := pgx.CollectExactlyOneRow(rows, scanRosterItem)
	if errors.Is(err, pgx.ErrNoRows) {
		return storage.RosterItem{}, false, nil
	}
	if err != nil {
		return storage.RosterItem{}, false, wrap(err, "get roster item %s of %s", contact, owner)
	}
	return it, true, nil
}

func (r rosters) PutRosterItem(ctx context.Context, owner string, it storage.RosterItem) error {
	if err := r.s.check(); err != nil {
		return err
	}
	sub := it.Subscription
	if sub == "" {
		sub = storage.SubNone
	}
	groups := it.Groups
	if groups == nil {
		groups = []string{}
	}
	_, err := r.s.pool.Exec(ctx, `INSERT INTO roster (owner, `+rosterColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (owner, contact) DO UPDATE SET name = excluded.name, subscription = excluded.subscription,
		ask = excluded.ask, pending_in = excluded.pending_in, groups = excluded.groups`,
		owner, it.JID, it.Name, sub, it.Ask, it.PendingIn, groups)
	return wrap(err, "put roster item %s of %s", it.JID, owner)
}

func (r rosters) DeleteRosterItem(ctx context.Context, owner, contact string) error {
	if err := r.s.check(); err != nil {
		return err
	}
	_, err := r.s.pool.Exec(ctx, `DELETE FROM roster WHERE owner = $1 AND contact = $2`, owner, contact)
	return wrap(err, "delete roster item %s of %s", contact, owner)
}
