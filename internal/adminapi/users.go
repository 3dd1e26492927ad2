package adminapi

import (
	"bufio"
	"context"
	csvpkg "encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"xcollect.dev/xcollect/storage"
)

// UserPage is one page of GET /v1/admin/users.
type UserPage struct {
	Users []string `json:"users"`
	Next  string   `json:"next,omitempty"` // pass as after= for the next page; empty on the last
}

// UserRequest adds an account or sets its password: Password is hashed
// by the node; Credentials (SCRAM salted keys, what the admin socket's
// client sends so that no password crosses it) are stored as given.
type UserRequest struct {
	JID         string               `json:"jid,omitempty"`
	Password    string               `json:"password,omitempty"`
	Credentials *storage.Credentials `json:"credentials,omitempty"`
}

// ImportResult is the answer of POST /v1/admin/users/import.
type ImportResult struct {
	Added   int           `json:"added"`
	Existed int           `json:"existed"` // already there: left unchanged
	Failed  []ImportError `json:"failed,omitempty"`
}

// ImportError is one refused line of an import.
type ImportError struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// bareJID checks s is an account JID of a served domain and returns it
// normalised.
func (a *api) bareJID(s string) (string, error) {
	j, err := jid.Parse(s)
	if err != nil || j.Localpart() == "" || j.Resourcepart() != "" {
		return "", badRequest("%q is not a bare JID like alice@example.com", s)
	}
	if !a.served(j.Domainpart()) {
		return "", badRequest("domain %s is not served (domains: %s)", j.Domainpart(), strings.Join(a.d.Domains, ","))
	}
	return j.String(), nil
}

func (req UserRequest) credentials() (storage.Credentials, error) {
	if req.Credentials != nil {
		if len(req.Credentials.SHA256.SaltedPassword) == 0 {
			return storage.Credentials{}, badRequest("credentials without a SCRAM-SHA-256 key")
		}
		return *req.Credentials, nil
	}
	if req.Password == "" {
		return storage.Credentials{}, badRequest("no password")
	}
	return storage.NewCredentials(req.Password, 0)
}

func (a *api) listUsers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		fail(w, err)
		return
	}
	domains := a.d.Domains
	if d := q.Get("domain"); d != "" {
		if !a.served(d) {
			fail(w, badRequest("domain %s is not served", d))
			return
		}
		domains = []string{d}
	}
	ctx, cancel := storeContext(r)
	defer cancel()
	var all []string
	for _, d := range domains {
		list, err := a.d.Users.ListUsers(ctx, d)
		if err != nil {
			fail(w, fmt.Errorf("list users of %s: %w", d, err))
			return
		}
		all = append(all, list...)
	}
	sort.Strings(all)
	after := q.Get("after")
	start := sort.SearchStrings(all, after)
	if start < len(all) && all[start] == after {
		start++
	}
	page := UserPage{Users: all[start:min(start+limit, len(all))]}
	if start+limit < len(all) {
		page.Next = page.Users[len(page.Users)-1]
	}
	if page.Users == nil {
		page.Users = []string{}
	}
	writeJSON(w, http.StatusOK, page)
}

func (a *api) addUser(w http.ResponseWriter, r *http.Request) {
	var req UserRequest
	if err := decode(w, r, &req); err != nil {
		fail(w, err)
		return
	}
	bare, err := a.bareJID(req.JID)
	if err != nil {
		fail(w, err)
		return
	}
	cred, err := req.credentials()
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := storeContext(r)
	defer cancel()
	if err := a.d.Users.CreateUser(ctx, bare, cred); err != nil {
		fail(w, fmt.Errorf("add %s: %w", bare, err))
		return
	}
	a.d.Log.Info().Str("jid", bare).Msg("admin: user added")
	writeJSON(w, http.StatusCreated, UserRequest{JID: bare})
}

func (a *api) setPassword(w http.ResponseWriter, r *http.Request) {
	bare, err := a.bareJID(r.PathValue("jid"))
	if err != nil {
		fail(w, err)
		return
	}
	var req UserRequest
	if err := decode(w, r, &req); err != nil {
		fail(w, err)
		return
	}
	cred, err := req.credentials()
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := storeContext(r)
	defer cancel()
	if err := a.d.Users.SetCredentials(ctx, bare, cred); err != nil {
		fail(w, fmt.Errorf("set password of %s: %w", bare, err))
		return
	}
	a.d.Log.Info().Str("jid", bare).Msg("admin: password changed")
	writeJSON(w, http.StatusOK, UserRequest{JID: bare})
}

func (a *api) deleteUser(w http.ResponseWriter, r *http.Request) {
	bare, err := a.bareJID(r.PathValue("jid"))
	if err != nil {
		fail(w, err)
		return
	}
	ctx, cancel := storeContext(r)
	defer cancel()
	if err := a.d.Users.DeleteUser(ctx, bare); err != nil {
		fail(w, fmt.Errorf("delete %s: %w", bare, err))
		return
	}
	a.d.Log.Info().Str("jid", bare).Msg("admin: user deleted")
	writeJSON(w, http.StatusOK, UserRequest{JID: bare})
}

// Import limits: the body, and the time one import may take.
const (
	MaxImportBytes = 64 << 20
	importTimeout  = 10 * time.Minute
	importWriters  = 64 // concurrent CreateUser calls of one import
)

type importLine struct {
	n            int
	jid, pw, err string
}

// readImport parses the body: CSV (jid,password; a first line
// "jid,password" is a header) when csv is true, else JSON
// lines {"jid": …, "password": …}. Blank lines are skipped.
func readImport(body io.Reader, csv bool) ([]importLine, error) {
	var out []importLine
	if csv {
		cr := csvpkg.NewReader(body)
		cr.FieldsPerRecord = -1
		for n := 1; ; n++ {
			rec, err := cr.Read()
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			if err != nil {
				return nil, badRequest("csv: %v", err)
			}
			if n == 1 && len(rec) == 2 && strings.EqualFold(rec[0], "jid") && strings.EqualFold(rec[1], "password") {
				continue
			}
			if len(rec) != 2 {
				out = append(out, importLine{n: n, err: fmt.Sprintf("%d fields, want jid,password", len(rec))})
				continue
			}
			out = append(out, importLine{n: n, jid: strings.TrimSpace(rec[0]), pw: rec[1]})
		}
	}
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var v struct {
			JID      string `json:"jid"`
			Password string `json:"password"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			out = append(out, importLine{n: n, err: "not JSON: " + err.Error()})
			continue
		}
		out = append(out, importLine{n: n, jid: v.JID, pw: v.Password})
	}
	if err := sc.Err(); err != nil {
		return nil, badRequest("read: %v", err)
	}
	return out, nil
}

// importUsers answers POST /v1/admin/users/import.
func (a *api) importUsers(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), importTimeout)
	defer cancel()
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	res, err := ImportUsers(ctx, a.d.Users, a.d.Domains, http.MaxBytesReader(w, r.Body, MaxImportBytes), mt == "text/csv")
	if err != nil {
		fail(w, err)
		return
	}
	a.d.Log.Info().Int("added", res.Added).Int("existed", res.Existed).Int("failed", len(res.Failed)).Msg("admin: users imported")
	writeJSON(w, http.StatusOK, res)
}

// ImportUsers adds every account of body (CSV jid,password when csv, else
// JSON lines) to users; accounts outside domains and bad lines are listed
// in Failed, accounts that exist are left unchanged. Passwords are hashed
// on as many goroutines as there are CPUs: the hashing (two PBKDF2 with
// 4096 rounds each) is the cost. The store calls run under ctx.
func ImportUsers(ctx context.Context, users storage.UserStore, domains []string, body io.Reader, csv bool) (ImportResult, error) {
	lines, err := readImport(body, csv)
	if err != nil {
		return ImportResult{}, err
	}
	a := &api{d: Deps{Domains: domains}}
	var (
		mu  sync.Mutex
		res ImportResult
		wg  sync.WaitGroup
	)
	work := make(chan importLine)
	type account struct {
		n    int
		bare string
		cred storage.Credentials
	}
	hashed := make(chan account)
	failed := func(l importLine, msg string) {
		mu.Lock()
		res.Failed = append(res.Failed, ImportError{Line: l.n, Error: msg})
		mu.Unlock()
	}
	// Hashing takes the CPUs; the store calls wait on fsync, so more of
	// them run at once and a store that batches commits shares them.
	var hashers sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		hashers.Add(1)
		go func() { // owned by this call: hashers.Wait below
			defer hashers.Done()
			for l := range work {
				bare, err := a.bareJID(l.jid)
				if err != nil {
					failed(l, err.Error())
					continue
				}
				cred, err := storage.NewCredentials(l.pw, 0)
				if err != nil {
					failed(l, err.Error())
					continue
				}
				hashed <- account{n: l.n, bare: bare, cred: cred}
			}
		}()
	}
	for range importWriters {
		wg.Add(1)
		go func() { // owned by this call: wg.Wait below
			defer wg.Done()
			for acc := range hashed {
				err := users.CreateUser(ctx, acc.bare, acc.cred)
				mu.Lock()
				switch {
				case err == nil:
					res.Added++
				case errors.Is(err, storage.ErrExists):
					res.Existed++
				default:
					res.Failed = append(res.Failed, ImportError{Line: acc.n, Error: err.Error()})
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, l := range lines {
		if l.err != "" {
			failed(l, l.err)
			continue
		}
		select {
		case work <- l:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	hashers.Wait()
	close(hashed)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("import stopped after %d accounts: %w", res.Added, err)
	}
	sort.Slice(res.Failed, func(i, j int) bool { return res.Failed[i].Line < res.Failed[j].Line })
	return res, nil
}
