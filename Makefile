# kycshare: the two commands are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: demo test bench lint build release clean

## demo: the whole job on the embedded emulator; no credentials, no network
demo:
	$(CARGO) run --release --quiet -- demo --dir target/kycshare-demo || [ $$? -eq 1 ]

## test: build everything and run every test, the ledger's against both SQLite
## and a throwaway PostgreSQL (scripts/with-postgres.sh starts it; plain
## `cargo test` skips the PostgreSQL tests, saying so)
test:
	scripts/with-postgres.sh $(CARGO) test --all-targets --locked

## bench: criterion per-row benchmarks and the end-to-end benchmarks (figures in docs/performance.md)
bench:
	$(CARGO) bench --bench per_row --locked
	scripts/bench.sh

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

build:
	$(CARGO) build --release --locked

clean:
	$(CARGO) clean
	rm -rf bench-data
