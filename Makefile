# xcollect — the two commands a newcomer runs: `make run` and `make test`.
GO        ?= go
BIN       := bin/xcollect
DATA      ?= ./data
C2S       ?= :5222
C2S_TLS   ?= :5223
COMPONENT ?= :5347
GOFLAGS_TEST ?= -race -count=1 -timeout 20m

.PHONY: all build run run-postgres hello test test-deps vet lint bench fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/xcollect

# One node for localhost on the embedded store in ./data, with a demo user
# and a demo processor (component).
run: build $(DATA)/xcollect.yaml
	@$(BIN) user list --config $(DATA)/xcollect.yaml | grep -qx demo@localhost || \
	  $(BIN) user add demo@localhost --password demo --config $(DATA)/xcollect.yaml
	@$(MAKE) --no-print-directory hello
	$(BIN) serve --config $(DATA)/xcollect.yaml --c2s $(C2S) --c2s-tls $(C2S_TLS) --component $(COMPONENT)

# The same node on a throw-away local Postgres (kept in ./data/pg).
run-postgres: build $(DATA)/xcollect.yaml
	@$(GO) build -o bin/pgtmp ./internal/pgtest/cmd/pgtmp
	@rm -f $(DATA)/pg.dsn; bin/pgtmp -dir $(DATA)/pg > $(DATA)/pg.dsn & echo $$! > $(DATA)/pgtmp.pid; \
	  for i in $$(seq 1 100); do test -s $(DATA)/pg.dsn && break; sleep 0.1; done; \
	  DSN=$$(cat $(DATA)/pg.dsn); echo "postgres: $$DSN"; \
	  $(BIN) user add demo@localhost --password demo --config $(DATA)/xcollect.yaml --postgres-dsn "$$DSN" 2>/dev/null; \
	  $(MAKE) --no-print-directory hello STORE_FLAGS=" --postgres-dsn '$$DSN'"; \
	  $(BIN) serve --config $(DATA)/xcollect.yaml --postgres-dsn "$$DSN" --c2s $(C2S) --c2s-tls $(C2S_TLS) --component $(COMPONENT); \
	  kill $$(cat $(DATA)/pgtmp.pid)

$(DATA)/xcollect.yaml:
	@mkdir -p $(DATA)
	@printf '%s\n' \
	  '# written by make run; see deployments/xcollect.example.yaml for every key' \
	  'domains: [localhost]' \
	  'data_dir: $(DATA)' \
	  'components:' \
	  '  - jid: collector.localhost' \
	  '    secret: collector-secret' \
	  '    receive_presence: true' > $@

# STORE_FLAGS: what the admin commands need to reach the node's store
# (run-postgres passes its --postgres-dsn).
hello:
	@echo
	@echo "xcollect: domain localhost — c2s STARTTLS $(C2S), direct TLS $(C2S_TLS), components $(COMPONENT), HTTP 127.0.0.1:5280 (loopback; listeners.http to expose it)"
	@echo "  log in:        demo@localhost / password demo (self-signed certificate: accept it in your client)"
	@echo "                 e.g. echo hi | go-sendxmpp -u demo@localhost -p demo -j 127.0.0.1:5222 -n demo@localhost"
	@echo "  add a user:    $(BIN) user add alice@localhost --config $(DATA)/xcollect.yaml$(if $(STORE_FLAGS), $(STORE_FLAGS))   (also while the node runs)"
	@echo "  processor:     XEP-0114 component collector.localhost, secret collector-secret, port 5347"
	@echo "                 e.g. $(BIN) process --addr 127.0.0.1:5347 --jid collector.localhost --secret collector-secret"
	@echo "  3-node cluster on Postgres: deployments/local-cluster.sh (README.md, 'A cluster of three nodes')"
	@echo

# Installs what the tests need on a fresh Debian machine, then runs them all.
test: test-deps vet
	$(GO) test $(GOFLAGS_TEST) ./...

test-deps:
	@scripts/test-deps.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt: run gofmt -w on the files above"; exit 1)
	$(GO) vet ./...

lint: vet
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench: build
	@scripts/bench.sh

# Runs every fuzz target (func FuzzX in a _test.go file) for FUZZTIME each,
# one after another; their seed corpora run in make test. New failing
# inputs land in the package's testdata/fuzz/FuzzX/.
FUZZTIME ?= 30s
fuzz:
	@fail=; for d in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$($(GO) test -list '^Fuzz' $$d | grep '^Fuzz'); do \
	    echo "== $$d $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$d || fail="$$fail $$d:$$f"; \
	  done; \
	done; \
	test -z "$$fail" || { echo "fuzz: failures in$$fail"; exit 1; }

clean:
	rm -rf bin
