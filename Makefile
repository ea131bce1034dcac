# kuberules — build, run the bundled example, test, benchmark.
SWIFT      ?= swift
SHELL      := /bin/bash
TESTLOG    := .build/test.log
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the build, the tests and the benchmarks need.
APT_PACKAGES := libmnl-dev libnftnl-dev pkg-config nftables iptables iproute2 util-linux python3
BIN        := .build/debug/kuberules
EXAMPLE    := Fixtures/example

.PHONY: all deps build run test test-unit test-kernel record bench clean

all: build

## deps: install the Debian packages that are missing (apt-get; uses sudo when not root)
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

## build: debug build of the kuberules binary
build: deps
	$(SWIFT) build --product kuberules

## run: build, then print the iptables rules of the bundled example cluster
run: build
	$(BIN) render --backend iptables --config $(EXAMPLE)/proxy-config.yaml $$(cat $(EXAMPLE)/args) $(EXAMPLE)/cluster.yaml

## test: unit, golden and CLI tests; kernel tests in network namespaces when root
test: deps
	$(SWIFT) build --build-tests
	@mkdir -p .build; rm -f $(TESTLOG); status=0; \
	$(SWIFT) test --skip-build --disable-swift-testing --skip KernelTests 2>&1 | tee -a $(TESTLOG); \
	[ $${PIPESTATUS[0]} = 0 ] || status=1; \
	$(MAKE) --no-print-directory test-kernel 2>&1 | tee -a $(TESTLOG); \
	[ $${PIPESTATUS[0]} = 0 ] || status=1; \
	passed=$$(grep -c "^Test Case '.*' passed" $(TESTLOG)); \
	failed=$$(grep -c "^Test Case '.*' failed" $(TESTLOG)); \
	skipped=$$(grep -c "^Test Case '.*' skipped" $(TESTLOG)); \
	echo "$$passed passed, $$failed failed, $$skipped skipped"; \
	exit $$status

## test-kernel: tests that program a real kernel, each inside a network namespace it creates
test-kernel:
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "SKIPPED kernel tests: they need root to create network namespaces (CI runs as root)"; \
	else \
	  unshare -n $(SWIFT) test --skip-build --disable-swift-testing --filter KernelTests; \
	fi

## record: rewrite the golden files under Fixtures/ from the current build
record:
	$(SWIFT) build --build-tests
	KUBERULES_RECORD=1 $(SWIFT) test --skip-build --filter GoldenTests

## bench: release build, then kuberules side by side with nft / iptables-restore at 1k and 10k services
##        (BENCH_N="1000 10000 30000" for more, BENCH_SLOW=0 to skip the minutes-long stock loads; needs root)
bench: deps
	$(SWIFT) build -c release --product kuberules
	python3 bench/bench.py

clean:
	rm -rf .build

## test-ipvs: boot Debian's kernel in qemu and check IPVS for real (Tests/ipvs-vm/README.md)
.PHONY: test-ipvs
test-ipvs: build
	KUBERULES_BIN=$(CURDIR)/$(BIN) bash Tests/ipvs-vm/run.sh
