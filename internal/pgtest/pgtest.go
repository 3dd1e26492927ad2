package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"xcollect.dev/xcollect/internal/testutil"
)

// BinDir is where Debian's postgresql-15 package installs the server binaries.
const BinDir = "/usr/lib/postgresql/15/bin"

// InstallHint is the fix printed when the server binaries are missing.
const InstallHint = "sudo apt-get install -y postgresql-15 (or: make test-deps)"

// Host is the address the server listens on. Linux routes all of 127.0.0.0/8
// to lo, but a socket bound to 127.0.0.1 only accepts connections addressed to
// 127.0.0.1; nodes of cluster tests bound to 127.0.0.2/3 still reach it
// because the destination address is 127.0.0.1 whatever the source is.
const Host = "127.0.0.1"

// Timeouts of the server lifecycle.
const (
	startTimeout = 60 * time.Second // initdb + first start on a loaded 2-core box
	stopTimeout  = 30 * time.Second // fast shutdown; then SIGQUIT
)

// Options configure a throw-away server.
type Options struct {
	// Durable keeps fsync, synchronous_commit and full_page_writes on, as a
	// production server has them. Default false: fast mode for unit tests.
	Durable bool
	// Dir is the directory that holds the cluster (Dir/data), its socket and
	// its log. Default "": a fresh temporary directory.
	Dir string
	// Port is the TCP port on Host. Default 0: a free port.
	Port int
	// Settings are extra "name=value" server settings (-c name=value).
	Settings []string
}

// Server is a PostgreSQL 15 server owned by a test (or by pgtmp). Its
// methods are safe for concurrent use.
type Server struct {
	opts    Options
	dir     string
	tempDir bool // dir was created by us and is removed by Close
	port    int
	cred    *syscall.Credential // non-nil when running as root

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one running postmaster and the goroutine that waits for it.
type process struct {
	pid  int
	done chan struct{} // closed when the postmaster exited
	err  error         // exit status, valid after done
}

// Start initialises and starts a fast-mode (fsync off) server for t. It is
// stopped and its directory removed when t ends. Missing binaries fail t
// with the command that installs them.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartOptions(t, Options{})
}

// StartOptions is Start with options, e.g. Options{Durable: true} for
// durability tests and benchmarks.
func StartOptions(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return s
}

// Main runs a package's tests against one shared server: call it from
// TestMain. use receives the server before any test runs (store it in a
// test-package variable); the server is closed after m.Run, then Main exits
// the process with m.Run's code.
//
//	var pg *pgtest.Server
//	func TestMain(m *testing.M) { pgtest.Main(m, pgtest.Options{}, func(s *pgtest.Server) { pg = s }) }
func Main(m *testing.M, opts Options, use func(*Server)) {
	s, err := New(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		os.Exit(1)
	}
	use(s)
	code := m.Run()
	if err := s.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// New initialises a cluster (unless opts.Dir already holds one) and starts
// the server. Close stops it and removes a temporary directory.
func New(opts Options) (*Server, error) {
	if _, err := os.Stat(filepath.Join(BinDir, "postgres")); err != nil {
		return nil, fmt.Errorf("PostgreSQL 15 server binaries not found in %s: %s", BinDir, InstallHint)
	}
	s := &Server{opts: opts, dir: opts.Dir, port: opts.Port}
	if os.Geteuid() == 0 {
		cred, err := postgresUser()
		if err != nil {
			return nil, err
		}
		s.cred = cred
	}
	if s.dir == "" {
		dir, err := os.MkdirTemp("", "pgtest.")
		if err != nil {
			return nil, fmt.Errorf("temp dir: %w", err)
		}
		s.dir, s.tempDir = dir, true
	} else if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("dir: %w", err)
	}
	if err := s.setup(); err != nil {
		s.removeDir()
		return nil, err
	}
	return s, nil
}

// setup runs initdb if needed and starts the server, retrying on another
// port if a free port was taken by someone else in the meantime.
func (s *Server) setup() error {
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("chown %s: %w", s.dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.dataDir(), "PG_VERSION")); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(BinDir, "initdb"),
			"-D", s.dataDir(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
		cmd.Dir = s.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("initdb: %w\n%s", err, out)
		}
	}
	fixed := s.port != 0
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if !fixed {
			if s.port, err = testutil.FreePort(Host); err != nil {
				return err
			}
		}
		if err = s.Start(); err == nil || fixed || !strings.Contains(err.Error(), "could not bind") {
			return err
		}
	}
	return err
}

// postgresUser returns the credential of the postgres system user, creating
// the user if it is missing (Postgres refuses to run as root).
func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		out, aerr := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres").CombinedOutput()
		if aerr != nil {
			return nil, fmt.Errorf("running as root needs the postgres user: useradd: %w: %s", aerr, out)
		}
		if u, err = user.Lookup("postgres"); err != nil {
			return nil, fmt.Errorf("lookup postgres user: %w", err)
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("postgres gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }
func (s *Server) logPath() string { return filepath.Join(s.dir, "postgres.log") }

// Dir returns the directory holding the cluster, socket and log.
func (s *Server) Dir() string { return s.dir }

// Port returns the TCP port; it stays the same across Stop and Start.
func (s *Server) Port() int { return s.port }

// DSN returns the URL of the postgres database as superuser postgres.
func (s *Server) DSN() string { return s.DatabaseDSN("postgres") }

// DatabaseDSN returns the URL of database name on this server.
func (s *Server) DatabaseDSN(name string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", net.JoinHostPort(Host, strconv.Itoa(s.port)), name)
}

// Start starts the server on its data directory and port and waits until it
// accepts connections. It is a no-op while the server runs. Tests use it
// after Stop to model a database restart.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return nil
	}
	args := []string{"-D", s.dataDir(), "-p", strconv.Itoa(s.port), "-k", s.dir,
		"-c", "listen_addresses=" + Host, "-c", "max_connections=300",
		"-c", "shared_buffers=64MB", "-c", "log_min_messages=warning"}
	if !s.opts.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	for _, kv := range s.opts.Settings {
		args = append(args, "-c", kv)
	}
	logf, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	logStart, _ := logf.Seek(0, 2) // only used to show this start's log lines; 0 on error is fine
	p, err := spawn(filepath.Join(BinDir, "postgres"), args, s.dir, logf, s.cred)
	if cerr := logf.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	if err := s.waitReady(p); err != nil {
		stopProcess(p)
		return fmt.Errorf("start postgres on port %d: %w\n%s", s.port, err, s.logTail(logStart))
	}
	s.proc = p
	return nil
}

// spawn starts the postmaster from a goroutine locked to its OS thread, so
// that Pdeathsig (sent when that thread dies, e.g. the test binary is
// killed) stops Postgres instead of leaving it running. The goroutine stays
// locked in Wait until the postmaster exits.
func spawn(path string, args []string, dir string, logf *os.File, cred *syscall.Credential) (*process, error) {
	p := &process{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		defer close(p.done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(path, args...)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
	}()
	if err := <-started; err != nil {
		<-p.done
		return nil, err
	}
	return p, nil
}

// waitReady polls until the server accepts a connection or p exits.
func (s *Server) waitReady(p *process) error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("postgres exited: %v", p.err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, s.DSN())
		if err == nil {
			err = c.Close(ctx)
			cancel()
			if err == nil {
				return nil
			}
		} else {
			cancel()
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v: %v", startTimeout, last)
}

// Stop shuts the server down fast (SIGINT to the postmaster: active
// transactions are rolled back, committed data stays) and waits for it to
// exit. It is a no-op while the server is stopped.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	err := stopProcess(s.proc)
	s.proc = nil
	return err
}

// stopProcess sends SIGINT (fast shutdown), then SIGQUIT (immediate) and
// SIGKILL if the postmaster does not exit in time.
func stopProcess(p *process) error {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL} {
		if err := syscall.Kill(p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stop postgres pid %d: %w", p.pid, err)
		}
		select {
		case <-p.done:
			if sig != syscall.SIGINT {
				return fmt.Errorf("postgres pid %d needed %v to stop", p.pid, sig)
			}
			return nil
		case <-time.After(stopTimeout):
		}
	}
	return fmt.Errorf("postgres pid %d did not exit after SIGKILL", p.pid)
}

// Running reports whether the server was started and not stopped.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// Close stops the server and removes its directory if New created it.
func (s *Server) Close() error {
	err := s.Stop()
	s.removeDir()
	return err
}

func (s *Server) removeDir() {
	if s.tempDir {
		// Best effort: a leftover temp dir is harmless and reported by nobody.
		_ = os.RemoveAll(s.dir)
	}
}

// logTail returns the server log written since offset, at most 4 KiB.
func (s *Server) logTail(offset int64) string {
	b, err := os.ReadFile(s.logPath())
	if err != nil || offset > int64(len(b)) {
		return ""
	}
	b = b[offset:]
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(bytes.TrimSpace(b))
}

// CreateDatabase creates a fresh, empty database for t and returns its DSN.
// The database is dropped when t ends (if the server still runs).
func (s *Server) CreateDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", time.Now().UnixNano(), sanitize(t.Name()))
	if len(name) > 63 {
		name = name[:63]
	}
	if err := s.exec(fmt.Sprintf("CREATE DATABASE %s", pgx.Identifier{name}.Sanitize())); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if !s.Running() {
			return
		}
		if err := s.exec(fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", pgx.Identifier{name}.Sanitize())); err != nil {
			t.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	return s.DatabaseDSN(name)
}

func (s *Server) exec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.DSN())
	if err != nil {
		return err
	}
	defer c.Close(context.Background()) //nolint:errcheck // closing a finished admin connection
	_, err = c.Exec(ctx, sql)
	return err
}

func sanitize(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
