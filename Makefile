# nksrun: two commands on a fresh Debian machine (as root):
#   make demo    builds nksrun, brings up the testbed (real kube-apiserver +
#                N real sshd nodes) and runs the logrotate runbook against it
#   make test    runs every test (unit + end-to-end on the testbed)

N        ?= 6
GO       ?= go
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X nksrun/cmd/nksrun/cli.Version=$(VERSION)
TESTBED  ?= /tmp/nksrun-testbed
DEB_PKGS := openssh-server openssh-client sudo logrotate util-linux iproute2 procps git

PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
GOOS     ?= $(shell $(GO) env GOOS)
GOARCH   ?= $(shell $(GO) env GOARCH)

.PHONY: all build install release deps test unit vet testbed testbed-down demo bench fuzz clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/nksrun ./cmd/nksrun

# install puts nksrun in $(BINDIR) and its shell completions where bash,
# zsh and fish look for them (DESTDIR for packaging).
install: build
	install -D -m 0755 bin/nksrun $(DESTDIR)$(BINDIR)/nksrun
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	bin/nksrun completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/nksrun
	bin/nksrun completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_nksrun
	bin/nksrun completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/nksrun.fish
	@echo "installed $(DESTDIR)$(BINDIR)/nksrun ($$($(DESTDIR)$(BINDIR)/nksrun --version))"

# release is the binary to ship: static (no cgo), no local paths
# (-trimpath), no symbol table or DWARF (-s -w), version stamped.
release:
	CGO_ENABLED=0 GOOS=$(GOOS) GOARCH=$(GOARCH) $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o dist/nksrun-$(VERSION)-$(GOOS)-$(GOARCH) ./cmd/nksrun
	@cd dist && sha256sum nksrun-$(VERSION)-$(GOOS)-$(GOARCH) > nksrun-$(VERSION)-$(GOOS)-$(GOARCH).sha256
	@ls -l dist/nksrun-$(VERSION)-$(GOOS)-$(GOARCH) | awk '{printf "dist/%s: %d bytes (%.1f MiB)\n", "nksrun-$(VERSION)-$(GOOS)-$(GOARCH)", $$5, $$5/1048576}'

# deps installs the Debian packages the testbed needs (only what is missing).
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# vet: go vet, gofmt and staticcheck (pinned; fetched through the module
# proxy on first use). ST1005 is off: error strings here start with
# Kubernetes kind names ("Secrets cannot ...", "PodDisruptionBudget ...").
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
VET_PKGS    := ./... ./testdata/testbed/ ./testdata/bench/... ./testdata/golden/
vet:
	$(GO) vet $(VET_PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) run $(STATICCHECK) -checks 'all,-ST1000,-ST1003,-ST1005,-ST1016,-ST1020,-ST1021,-ST1022,-ST1023' $(VET_PKGS)

# test is the README's test command and what .ci/run runs. The end-to-end
# tests need root and the packages above; with CI set they fail instead of
# skipping when those are missing.
test: deps vet
	$(GO) run ./cmd/testbed build-apiserver
	$(GO) test -race -count=1 -timeout 60m ./... ./testdata/bench/...
	$(MAKE) fuzz FUZZTIME=4000x

unit:
	$(GO) test -short ./engine/... ./inventory/... ./modules/...

testbed: deps build
	$(GO) run ./cmd/testbed up -n $(N) -dir $(TESTBED)

testbed-down:
	$(GO) run ./cmd/testbed down -dir $(TESTBED)

# demo: the main job against a fresh testbed: plan (drift on every docker
# node), apply, plan again (in sync, exit 0).
demo: testbed
	@set -e; S=$(TESTBED)/state.json; \
	K=$$(sed -n 's/.*"kubeconfig": *"\([^"]*\)".*/\1/p' $$S); \
	I=$$(sed -n 's/.*"key": *"\([^"]*\)".*/\1/p' $$S); \
	H=$$(sed -n 's/.*"known_hosts": *"\([^"]*\)".*/\1/p' $$S); \
	F="--kubeconfig $$K -i $$I --known-hosts $$H"; \
	echo "+ nksrun inventory --kubeconfig $$K"; ./bin/nksrun inventory --kubeconfig $$K; \
	echo "+ nksrun plan $$F runbooks/logrotate.yaml"; ./bin/nksrun plan $$F runbooks/logrotate.yaml || true; \
	echo "+ nksrun apply --auto-approve $$F runbooks/logrotate.yaml"; ./bin/nksrun apply --auto-approve $$F runbooks/logrotate.yaml; \
	echo "+ nksrun plan --detailed-exitcode $$F runbooks/logrotate.yaml"; ./bin/nksrun plan --detailed-exitcode $$F runbooks/logrotate.yaml; \
	echo; echo "In sync. The testbed stays up: try other runbooks with the flags above; 'make testbed-down' removes it."

# bench: as root, a testbed per size in BENCH_N (200; BENCH_N=200,1000 for
# both tables): nksrun plan/apply against the floor (one connection + one
# exec per node), doctor against one runbook's plan, median (min-max) of
# BENCH_REPS, with nksrun's default flags; then the engine micro-benchmarks.
# It fails when any node of a measured run was unreachable or failed: a
# figure counts only complete runs. BENCH_FLAGS passes more driver flags
# (e.g. -md bench.md, -v).
BENCH_N     ?= 200
BENCH_REPS  ?= 5
BENCH_FLAGS ?=
bench: deps
	$(GO) run ./testdata/bench/driver -n $(BENCH_N) -reps $(BENCH_REPS) $(BENCH_FLAGS)
	$(GO) test ./engine -run '^$$' -bench . -benchmem

# fuzz runs every fuzz target for FUZZTIME each: a duration (60s) or a
# count of inputs (make test: 4000x each, a few seconds here). make test
# counts: Go 1.26's fuzz coordinator can fail a duration-bounded run at its
# end with a spurious "context deadline exceeded" when the machine is busy
# (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
FUZZTIME ?= 60s
FUZZ_TARGETS := ./engine/runbook:FuzzParse ./engine/gather:FuzzParseOutput ./engine/planfile:FuzzRead \
	./engine/views:FuzzRedactJSON ./modules/grubarg:FuzzEdit ./modules/k8spatch:FuzzSetINI
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} ($${t%%:*}) for $(FUZZTIME)"; \
		$(GO) test $${t%%:*} -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME); \
	done

clean:
	rm -rf bin dist
