package postgres

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"xcollect.dev/xcollect/storage"
)

// users implements storage.UserStore on table users.
type users struct{ s *Store }

// domainOf returns the domain part of a bare JID.
func domainOf(jid string) string {
	if i := strings.LastIndexByte(jid, '@'); i >= 0 {
		return jid[i+1:]
	}
	return jid
}

func (u users) CreateUser(ctx context.Context, user string, c storage.Credentials) error {
	if err := u.s.check(); err != nil {
		return err
	}
	_, err := u.s.pool.Exec(ctx, `INSERT INTO users (jid, domain, sha1_salt, sha1_iter, sha1_key, sha256_salt, sha256_iter, sha256_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, user, domainOf(user),
		c.SHA1.Salt, c.SHA1.Iterations, c.SHA1.SaltedPassword, c.SHA256.Salt, c.SHA256.Iterations, c.SHA256.SaltedPassword)
	return wrap(err, "create user %s", user)
}

func (u users) SetCredentials(ctx context.Context, user string, c storage.Credentials) error {
	if err := u.s.check(); err != nil {
		return err
	}
	tag, err := u.s.pool.Exec(ctx, `UPDATE users SET sha1_salt = $2, sha1_iter = $3, sha1_key = $4,
		sha256_salt = $5, sha256_iter = $6, sha256_key = $7 WHERE jid = $1`, user,
		c.SHA1.Salt, c.SHA1.Iterations, c.SHA1.SaltedPassword, c.SHA256.Salt, c.SHA256.Iterations, c.SHA256.SaltedPassword)
	if err == nil && tag.RowsAffected() == 0 {
		err = storage.ErrNotFound
	}
	return wrap(err, "set credentials of %s", user)
}

func (u users) GetCredentials(ctx context.Context, user string) (storage.Credentials, error) {
	var c storage.Credentials
	if err := u.s.check(); err != nil {
		return c, err
	}
	err := u.s.pool.QueryRow(ctx, `SELECT sha1_salt, sha1_iter, sha1_key, sha256_salt, sha256_iter, sha256_key
		FROM users WHERE jid = $1`, user).Scan(&c.SHA1.Salt, &c.SHA1.Iterations, &c.SHA1.SaltedPassword,
		&c.SHA256.Salt, &c.SHA256.Iterations, &c.SHA256.SaltedPassword)
	if errors.Is(err, pgx.ErrNoRows) {
		err = storage.ErrNotFound
	}
	return c, wrap(err, "get credentials of %s", user)
}

func (u users) DeleteUser(ctx context.Context, user string) error {
	if err := u.s.check(); err != nil {
		return err
	}
	b := &pgx.Batch{}
	b.BeginTx(pgx.TxOptions{})
	del := b.Queue(`DELETE FROM users WHERE jid = $1`, user)
	b.Queue(`DELETE FROM roster WHERE owner = $1`, user)
	b.Queue(`DELETE FROM offline WHERE to_jid = $1`, user)
	found := false
	del.Exec(func(tag pgconn.CommandTag) error {
		found = tag.RowsAffected() > 0
		return nil
	})
	br := u.s.pool.SendBatch(ctx, b)
	tx := br.Tx()
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if err := br.Close(); err != nil {
		return wrap(err, "delete user %s", user)
	}
	if !found {
		return wrap(storage.ErrNotFound, "delete user %s", user)
	}
	return wrap(tx.Commit(ctx), "delete user %s", user)
}

func (u users) ListUsers(ctx context.Context, domain string) ([]string, error) {
	if err := u.s.check(); err != nil {
		return nil, err
	}
	rows, _ := u.s.pool.Query(ctx, `SELECT jid FROM users WHERE domain = $1 ORDER BY jid COLLATE "C"`, domain)
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return list, wrap(err, "list users of %s", domain)
}
