# tessera: the commands a newcomer needs. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: help build test test-browser lint fmt run infra bench
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  make %-13s %s\n", $$1, $$2 }'

build: ## compile every crate and service (debug)
	$(CARGO) build --workspace --all-targets

infra: ## make sure PostgreSQL, Redis and RabbitMQ answer, starting them if needed
	scripts/infra.sh

test: infra ## run the whole workspace's tests against the local infrastructure
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	  $(CARGO) test --workspace --doc; \
	else \
	  echo "cargo-nextest not found; using cargo test (install: cargo install cargo-nextest)"; \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi

test-browser: infra ## the storefront (web/) in headless Chromium against the real services
	scripts/test-browser.sh

lint: ## formatting check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

run: infra ## run auth, users, orders and the storefront natively (Ctrl-C stops them)
	scripts/run.sh

bench: ## load-test a release build and print throughput, latency and memory
	scripts/bench.sh
