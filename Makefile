.PHONY: dev test build bench soak bench-migration

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

# The migration soak: a guest that checks its memory moved back and forth
# 50 times under two busy loops (the suite runs 4 of these moves).
soak:
	VPOOL_SOAK_MOVES=50 go test -count=1 -timeout 60m -run 'TestMigrationSoak$$' -v ./internal/hypervisor/qemu/

# Issue 13's migration figures: every case ten times, idle and loaded,
# vpool's settings and QEMU's defaults (about two hours on 2 cores).
bench-migration:
	go test -run XXX -bench Migration -benchtime 10x -timeout 6h ./internal/hypervisor/qemu/
