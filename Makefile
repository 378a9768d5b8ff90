# l4lb build, test and benchmark entry points. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
export GOFLAGS ?= -mod=mod

# Debian packages the build, the tests and the testbed need.
DEB_PACKAGES := clang-19 llvm-19 libbpf-dev linux-libc-dev bpftool iproute2 ethtool iputils-ping procps tcpdump iperf3 curl bird2 \
	qemu-system-x86 busybox-static xz-utils kmod ipvsadm

# The stock kernels the BPF programs are tested on under QEMU (make test-kernels; make test
# runs the oldest): Debian 12's 6.1 and the 6.12 of Debian 13 (from bookworm-backports /
# security). Pinned by their ABI package names; internal/vmtest finds a kernel in /boot by
# series, so a newer ABI of the same series works too. When Debian drops a pinned ABI from
# the archive, make deps installs the series' meta-package instead and says so: update the
# pin then. Each entry is PINNED:FALLBACK.
VM_KERNELS := linux-image-6.1.0-56-amd64:linux-image-amd64 linux-image-6.12.117+deb12-amd64:linux-image-6.12-amd64
# Kernel series make test-kernels runs (comma-separated).
KERNELS ?= 6.1,6.12

.PHONY: all deps build generate check-generated test test-kernels test-unit test-privileged bench fuzz demo demo-down vet clean

all: build

# deps installs what is missing and is quick when everything is present. RUNLEVEL=1 keeps
# package scripts from starting services (bird2's daemon) in the root namespace.
deps:
	@installed() { dpkg-query -W -f='$${Status}\n' $$1 2>/dev/null | grep -q 'install ok installed'; }; \
	missing=$$(for p in $(DEB_PACKAGES); do installed $$p || echo $$p; done); \
	kernels=$$(for k in $(VM_KERNELS); do installed $${k%%:*} || echo $$k; done); \
	if [ -n "$$missing$$kernels" ]; then \
		apt-get update -qq || exit 1; \
		for k in $$kernels; do \
			pin=$${k%%:*}; meta=$${k#*:}; \
			if apt-cache show $$pin >/dev/null 2>&1; then missing="$$missing $$pin"; \
			else echo "make deps: $$pin is no longer in the archive; installing $$meta (same series; update VM_KERNELS)"; missing="$$missing $$meta"; fi; \
		done; \
		echo "installing:" $$missing; \
		RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(GO) mod download

build: deps
	$(GO) build -o bin/l4lb ./cmd/l4lb
	$(GO) build -o bin/testbed ./testbed/cmd/testbed

# generate rebuilds the committed bpf2go output with the pinned clang.
generate: deps
	$(GO) generate ./pkg/...

# check-generated fails when the committed bpf2go output does not match the C sources.
check-generated: deps
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	cp -r go.mod go.sum bpf pkg internal $$tmp/; \
	(cd $$tmp && $(GO) generate ./pkg/... >/dev/null) || exit 1; \
	stale=0; for f in $$(cd $$tmp && find pkg -name '*_bpfel.go' -o -name '*_bpfel.o'); do \
		cmp -s $$tmp/$$f $$f || { echo "stale generated file: $$f (run make generate)"; stale=1; }; \
	done; exit $$stale

vet: deps
	@out=$$(gofmt -l cmd internal pkg testbed); [ -z "$$out" ] || { echo "not gofmt'ed (run gofmt -w):"; echo "$$out"; exit 1; }
	$(GO) vet ./...

# test runs everything: unit tests, privileged tests when L4LB_PRIVILEGED_TESTS=1 (CI), the
# generated-code check, and (privileged) the BPF and daemon tests on Debian 12's 6.1 in a VM.
test: deps check-generated vet
	$(GO) test -count=1 -timeout 15m ./...
	$(GO) run ./internal/vmtest/cmd/kernels -kernels 6.1

# test-kernels runs the BPF tests (packet and decap tables, fuzz corpus, pinning, end to end)
# and the daemon test on stock distribution kernels under QEMU, one boot per kernel.
test-kernels: deps
	L4LB_PRIVILEGED_TESTS=1 $(GO) run ./internal/vmtest/cmd/kernels -kernels $(KERNELS)

bench: deps
	$(GO) test -run '^$$' -bench Maglev -benchtime 200x -count 1 ./pkg/lb/
	L4LB_PRIVILEGED_TESTS=1 $(GO) test -run '^$$' -bench . -benchtime 20000x -count 1 ./pkg/lb/xdp/

fuzz: deps
	L4LB_PRIVILEGED_TESTS=1 $(GO) test -run '^$$' -fuzz FuzzXDP -fuzztime 60s ./pkg/lb/xdp/

# demo brings the testbed up (root) and shows the system work; the testbed stays up.
demo: build
	scripts/demo.sh

demo-down:
	@if [ -x bin/testbed ]; then bin/testbed down; else $(GO) run ./testbed/cmd/testbed down; fi

clean:
	rm -rf bin
