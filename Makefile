# ivserver — build, run and test. `make run` and `make test` are all a new
# user needs; both install libuv's headers first if they are missing.

SWIFT      ?= swift
USER_NAME  := $(shell id -un)
# Paths a normal user can write, one set per user.
RUN_DIR    ?= $(or $(XDG_RUNTIME_DIR),/tmp)/ivserver-$(USER_NAME)
SHM_PATH   ?= /dev/shm/ivserver-$(USER_NAME)
LAYOUT     ?= conf/vsoc_mem.json
LOG_LEVEL  ?= info

FUZZ_SECONDS ?= 60

.PHONY: all build install run test test-repeat test-repeat-fast version deb deb-test libvirt-test bench sanitize sanitize-address sanitize-thread fuzz fuzz-replay deps qemu-deps default-layout clean

all: build

# libuv1-dev from Debian's packages: installed when root, else the exact
# command is printed.
deps:
	@if pkg-config --exists libuv 2>/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing libuv1-dev (and pkg-config) with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libuv1-dev pkg-config; \
	else \
		echo "libuv's headers are missing; install them with:" >&2; \
		echo "    sudo apt-get install libuv1-dev pkg-config" >&2; \
		exit 1; \
	fi

# ivshmem-server: the multi-peer mode under QEMU's server's name (a link).
build: deps
	$(SWIFT) build -c release
	@ln -sf ivserver .build/release/ivshmem-server

run: build
	@mkdir -p $(RUN_DIR)
	@echo "Starting ivserver on $(LAYOUT). Attach a VM with:"
	@echo "    qemu-system-x86_64 ... -chardev socket,path=$(RUN_DIR)/qemu.sock,id=ivsh \\"
	@echo "        -device ivshmem-doorbell,chardev=ivsh,vectors=<regions in the layout>"
	@echo "Host clients connect to $(RUN_DIR)/client.sock. Stop with Ctrl-C."
	.build/release/ivserver --layout $(LAYOUT) --shm-path $(SHM_PATH) \
		--qemu-sock $(RUN_DIR)/qemu.sock --client-sock $(RUN_DIR)/client.sock --log-level $(LOG_LEVEL)

# The QEMU tests need qemu-system-x86_64 (Debian's qemu-system-x86).
qemu-deps:
	@if command -v qemu-system-x86_64 >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing qemu-system-x86 with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86; \
	else \
		echo "qemu-system-x86_64 is missing (the QEMU tests need it); install it with:" >&2; \
		echo "    sudo apt-get install qemu-system-x86" >&2; \
		exit 1; \
	fi

# --no-parallel: the tests spawn processes, and a fork in one test copies
# every fd of the test process until the child execs; a socket another test
# just closed would then stay open a moment longer, which the VM tests see.
test: deps qemu-deps
	python3 scripts/check-imports.py
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --no-parallel

# The tests RUNS times (20 unless given), to catch one that fails now and
# then: `make test-repeat RUNS=300 SUITES='InProcess|Signal'` runs the
# suites matching SUITES (swift test's --filter), BUSY=1 with the cores kept
# busy. Failed runs' logs stay in .build/test-repeat/.
RUNS   ?= 20
SUITES ?=
test-repeat: deps qemu-deps
	$(SWIFT) build --build-tests
	scripts/test-repeat.sh $(RUNS) '$(SUITES)'

# A few minutes of the fast suites whose tests race threads, processes and
# the event loop against each other (CI runs this after `make test`).
REPEAT_SUITES = InProcess|PendingShares|Fairness|SignalTable|GuestSignalling|HostilePeer|PeerSocket|FDTable|RestartUnderLoad|ServingControl|Handover
test-repeat-fast: deps qemu-deps
	$(SWIFT) build --build-tests
	scripts/test-repeat.sh $(RUNS) '$(REPEAT_SUITES)'

# The whole test suite under the address sanitizer (CI runs this one) and,
# with `make sanitize`, the thread sanitizer too. Separate build folders,
# so the normal build is not invalidated.
sanitize: sanitize-address sanitize-thread

sanitize-address: deps qemu-deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	LSAN_OPTIONS=suppressions=$(CURDIR)/scripts/lsan-suppressions.txt \
		$(SWIFT) test --skip-build --no-parallel --sanitize=address --scratch-path .build-asan

sanitize-thread: deps qemu-deps
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan
	$(SWIFT) test --skip-build --no-parallel --sanitize=thread --scratch-path .build-tsan

# libFuzzer on the three parsers of untrusted input, FUZZ_SECONDS each, with
# a memory cap. New inputs go to .build-fuzz/, the committed seeds stay as
# they are. WireFormat is built first as its own (instrumented) module.
FUZZ_FLAGS = -sanitize=fuzzer,address -parse-as-library -O -I .build-fuzz -L .build-fuzz -lWireFormat
LAYOUT_SOURCES = $(wildcard Sources/IVServer/Layout/*.swift)
FORMAT_SOURCES = $(wildcard Sources/WireFormat/*.swift)

.build-fuzz/libWireFormat.a: $(FORMAT_SOURCES)
	@mkdir -p .build-fuzz
	swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name WireFormat \
		-emit-module -emit-module-path .build-fuzz/WireFormat.swiftmodule -emit-library -static -o $@ $^

.build-fuzz/layout-fuzzer: Fuzz/LayoutFuzzer.swift $(LAYOUT_SOURCES) .build-fuzz/libWireFormat.a
	swiftc $(FUZZ_FLAGS) -module-name IVFuzz $(filter %.swift,$^) -o $@

.build-fuzz/handshake-fuzzer: Fuzz/HandshakeFuzzer.swift .build-fuzz/libWireFormat.a
	swiftc $(FUZZ_FLAGS) -module-name IVFuzz $(filter %.swift,$^) -o $@

.build-fuzz/header-fuzzer: Fuzz/HeaderFuzzer.swift .build-fuzz/libWireFormat.a
	swiftc $(FUZZ_FLAGS) -module-name IVFuzz $(filter %.swift,$^) -o $@

fuzz: .build-fuzz/layout-fuzzer .build-fuzz/handshake-fuzzer .build-fuzz/header-fuzzer
	@mkdir -p .build-fuzz/corpus-layout .build-fuzz/corpus-handshake .build-fuzz/corpus-header
	.build-fuzz/layout-fuzzer -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=512 -max_len=65536 \
		.build-fuzz/corpus-layout Fuzz/corpus/layout
	.build-fuzz/handshake-fuzzer -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=512 \
		.build-fuzz/corpus-handshake Fuzz/corpus/handshake
	.build-fuzz/header-fuzzer -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=512 -max_len=8192 \
		.build-fuzz/corpus-header Fuzz/corpus/header

# Every committed seed run once through its fuzzer (CI runs this): a parser
# change that breaks on a known input fails here, without fuzzing for long.
fuzz-replay: .build-fuzz/layout-fuzzer .build-fuzz/handshake-fuzzer .build-fuzz/header-fuzzer
	.build-fuzz/layout-fuzzer -runs=0 -rss_limit_mb=512 -max_len=65536 Fuzz/corpus/layout
	.build-fuzz/handshake-fuzzer -runs=0 -rss_limit_mb=512 Fuzz/corpus/handshake
	.build-fuzz/header-fuzzer -runs=0 -rss_limit_mb=512 -max_len=8192 Fuzz/corpus/header

# The Debian package: build/ivserver_<version>_<arch>.deb (see scripts/build-deb.sh).
deb: deps
	scripts/build-deb.sh

# Builds the .deb, checks it with lintian, installs, runs and purges it, then
# runs the units under a real systemd in a container, and domains of a real
# libvirtd there (docs/libvirt.md). Needs root.
deb-test: deps
	@command -v lintian >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq --no-install-recommends lintian; } \
		|| { echo "lintian is missing: sudo apt-get install lintian" >&2; exit 1; }
	@for tool in systemd-nspawn:systemd-container strace:strace libvirtd:libvirt-daemon-system apparmor_parser:apparmor qemu-system-x86_64:qemu-system-x86; do \
		command -v $${tool%%:*} >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq --no-install-recommends $${tool#*:}; } \
		|| { echo "$${tool%%:*} is missing: sudo apt-get install $${tool#*:}" >&2; exit 1; }; \
	done
	scripts/deb-test.sh

# Only the libvirt part of deb-test (docs/libvirt.md), on a freshly built .deb.
libvirt-test: deps
	scripts/libvirt-test.sh "$$(scripts/build-deb.sh | tail -1)"

# Benchmarks (not part of `make test`): ivserver against a bare C server,
# side by side; writes bench/results.md. BENCH_SECONDS and BENCH_ROUNDS tune
# it; BASELINE=<commit> also measures that commit's build beside this one.
bench: deps
	$(SWIFT) build -c release --static-swift-stdlib --disable-local-rpath --scratch-path .build-bench
	@mkdir -p .build-bench
	$(CC) -O2 -Wall -o .build-bench/limit-server Benchmarks/limit-server.c
	$(CC) -O2 -Wall -pthread -o .build-bench/loadgen Benchmarks/loadgen.c
	$(CC) -O2 -Wall -pthread -o .build-bench/peerload Benchmarks/peerload.c
	$(SWIFT)c -O -static-stdlib -o .build-bench/hello Benchmarks/hello.swift
	@if [ -n "$(BASELINE)" ]; then \
		rm -rf .build-bench/baseline-src && mkdir -p .build-bench/baseline-src && \
		git archive "$(BASELINE)" | tar -x -C .build-bench/baseline-src && \
		$(SWIFT) build -c release --static-swift-stdlib --disable-local-rpath \
			--package-path .build-bench/baseline-src --scratch-path .build-bench/baseline; \
	fi
	BENCH_BASELINE=$(if $(BASELINE),$(CURDIR)/.build-bench/baseline/release/ivserver) BENCH_BASELINE_NAME="$(BASELINE)" \
		python3 Benchmarks/run.py

# Installs ivserver, ivctl and the ivshmem-server link under PREFIX
# (/usr/local; DESTDIR for staging). The .deb is the packaged way.
PREFIX ?= /usr/local
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 .build/release/ivserver .build/release/ivctl $(DESTDIR)$(PREFIX)/bin/
	ln -sf ivserver $(DESTDIR)$(PREFIX)/bin/ivshmem-server

# Regenerates the version compiled into the binary from VERSION.
version:
	scripts/generate-version.sh VERSION > Sources/IVServer/Version.swift

# Regenerates the layout compiled into the binary from conf/vsoc_mem.json.
default-layout:
	scripts/generate-default-layout.sh conf/vsoc_mem.json > Sources/IVServer/Layout/DefaultLayout.swift

clean:
	rm -rf .build .build-asan .build-tsan .build-fuzz .build-release .build-manual .build-bench build
