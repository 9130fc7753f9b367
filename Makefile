# edgeproxy — `make help` lists the targets.
# Go's default install location, for a root shell whose PATH lacks it.
export PATH := $(PATH):/usr/local/go/bin
GO        ?= go
BIN       ?= bin/edgeproxy
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
TESTFLAGS ?= -race -count=1 -timeout 40m
PKGS      ?= ./...

# The BPF toolchain, pinned here only: bpf2go reads these (bpf/gen.go).
# The multiarch include directory (asm/types.h) is the host's.
MULTIARCH     := $(shell gcc -print-multiarch 2>/dev/null || echo $$(uname -m)-linux-gnu)
BPF2GO_CC     ?= clang
BPF2GO_STRIP  ?= llvm-strip
BPF2GO_CFLAGS ?= -O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/$(MULTIARCH)
export BPF2GO_CC BPF2GO_STRIP BPF2GO_CFLAGS

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install the Debian packages the build, tests, demo and benchmarks need (root)
	./scripts/install-deps.sh

.PHONY: generate
generate: ## regenerate the BPF objects and Go bindings (bpf2go)
	$(GO) generate ./bpf/...

.PHONY: build
build: ## build bin/edgeproxy
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o $(BIN) ./cmd/edgeproxy

DEB_DIR     := bin/deb
DEB_VERSION ?= 0.1.0~git$(shell git rev-parse --short HEAD 2>/dev/null || echo 0)

.PHONY: deb
deb: ## build the Debian package in bin/deb (nfpm): static binary, units, man page, /etc/edgeproxy/edgeproxy.yaml, logrotate, examples
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/pkg/units
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(DEB_VERSION) -X main.commit=$(COMMIT)" -o $(DEB_DIR)/pkg/edgeproxy ./cmd/edgeproxy
	$(DEB_DIR)/pkg/edgeproxy man | gzip -9n > $(DEB_DIR)/pkg/edgeproxy.8.gz
	for u in examples/*.service; do sed 's#/usr/local/bin/edgeproxy#/usr/bin/edgeproxy#g' $$u > $(DEB_DIR)/pkg/units/$$(basename $$u); done
	EDGEPROXY_VERSION=$(DEB_VERSION) $(GO) tool nfpm package -f packaging/nfpm.yaml -p deb -t $(DEB_DIR)/

.PHONY: test
test: deps ## run every test, privileged ones included (root), with the race detector
	$(GO) test $(TESTFLAGS) $(PKGS)

.PHONY: test-unit
test-unit: ## run the tests that need no root (-short: privileged tests skip)
	$(GO) test -short -count=1 $(PKGS)

.PHONY: bench-smoke
bench-smoke: ## run every Go benchmark once (-benchtime=1x), as CI does
	$(GO) test -count=1 -timeout 10m -run '^$$' -benchtime=1x -bench . $(PKGS)

.PHONY: lint
lint: ## go vet and staticcheck
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

CLANG_FORMAT ?= clang-format

.PHONY: format
format: ## gofmt the Go code and clang-format the C in bpf/ (.clang-format; needs Debian's clang-format)
	@command -v $(CLANG_FORMAT) >/dev/null || { echo "make format: $(CLANG_FORMAT) not found; install it (apt-get install clang-format) or set CLANG_FORMAT" >&2; exit 1; }
	gofmt -w $$(git ls-files '*.go')
	$(CLANG_FORMAT) -i --style=file bpf/*.c bpf/*.h

.PHONY: demo
demo: deps build ## build a namespace lab and show edgeproxy publishing it (root)
	$(BIN) demo

.PHONY: bench
bench: deps build ## benchmark edgeproxy against nftables NAT, HAProxy and nginx (root)
	$(GO) run ./bench -out bench/results
	$(GO) run ./bench -readme -out bench/results

.PHONY: certs
certs: ## write examples/skype.yaml's certificates to /etc/edgeproxy/tls (public CA + SAN leaf, internal CA)
	./examples/gen-certs.sh /etc/edgeproxy/tls

.PHONY: clean
clean: ## remove build output
	rm -rf bin
