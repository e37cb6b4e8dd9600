# tessera: the commands a newcomer needs. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: help build test test-browser test-contract lint check-deploy fmt run infra bench instructions compose-smoke
.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{ printf "  make %-14s %s\n", $$1, $$2 }'

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

test-contract: infra ## fuzz each service against its OpenAPI document (Schemathesis, every check)
	scripts/contract.sh

lint: check-deploy ## formatting check, clippy with warnings as errors, deployment checks
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

check-deploy: ## render and validate the Kubernetes overlays, parse compose, lint Dockerfiles
	scripts/check-deploy.sh

fmt: ## format the code
	$(CARGO) fmt --all

run: infra ## run auth, users, orders and the storefront natively (Ctrl-C stops them)
	scripts/run.sh

compose-smoke: ## bring docker-compose.yml up for real and drive the story through the gateway
	scripts/compose-smoke.sh

bench: ## load-test a release build: peak, latency at half of peak (open loop), memory, a profile
	scripts/bench.sh

instructions: ## instructions per request of users' read path under callgrind (repeatable)
	scripts/instructions.sh
