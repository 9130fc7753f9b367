# edgeproxy — `make help` lists the targets.
# Go's default install location, for a root shell whose PATH lacks it.
export PATH := $(PATH):/usr/local/go/bin
GO        ?= go
BIN       ?= bin/edgeproxy
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
TESTFLAGS ?= -race -count=1 -timeout 40m
PKGS      ?= ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## install the Debian packages the build, tests, demo and benchmarks need (root)
	./scripts/install-deps.sh

.PHONY: generate
generate: ## regenerate the BPF objects and Go bindings (bpf2go)
	$(GO) generate ./bpf/...

.PHONY: build
build: ## build bin/edgeproxy
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/edgeproxy

.PHONY: test
test: deps ## run every test, privileged ones included (root), with the race detector
	$(GO) test $(TESTFLAGS) $(PKGS)

.PHONY: lint
lint: ## go vet and staticcheck
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

.PHONY: demo
demo: deps build ## build a namespace lab and show edgeproxy publishing it (root)
	$(BIN) demo

.PHONY: bench
bench: deps build ## benchmark edgeproxy against nftables NAT, HAProxy and nginx (root)
	$(GO) run ./bench -out bench/results

.PHONY: certs
certs: ## write examples/skype.yaml's certificates to /etc/edgeproxy/tls (public CA + SAN leaf, internal CA)
	./examples/gen-certs.sh /etc/edgeproxy/tls

.PHONY: clean
clean: ## remove build output
	rm -rf bin
