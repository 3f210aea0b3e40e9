.PHONY: dev test build bench

# Run the platform on this machine (embedded etcd + API + local host).
dev:
	scripts/dev.sh $(ARGS)

# Run every test, installing what the suite needs.
test:
	scripts/test.sh

build:
	go build -o bin/vpool ./cmd/vpool

# Benchmarks carrying the issues' figures.
bench:
	go test -run XXX -bench . -benchtime 1x ./...
