# udmabuf-live top-level build. Every target installs/builds what it needs first.
#   make run     build everything, boot the test kernel in QEMU, show the device at work
#   make test    formatters and linters (make check), host unit tests, then every guest suite in QEMU
#   make shell   an interactive guest with the module loaded, to try udmabuf-ctl
#   make kselftest-install INSTALL_PATH=DIR   the suites as a kselftest collection
#   make kselftest-check INSTALL_PATH=DIR     run it on this machine, judged as in the guest
# KDIR=/path/to/kernel/build uses your own Rust-enabled kernel build tree instead of ours.
# KERNEL_FLAVOR=debug selects the debug kernel (selftests/config + selftests/config.debug).

SHELL := /bin/bash
KERNEL_FLAVOR ?= default
export KERNEL_FLAVOR
# The build and cache variables are defined once, in scripts/common.sh; read them from it
# (with this make's own KERNEL_FLAVOR and KDIR, which a command line may have set).
common = $(shell KBUILD_DIR= MODULE_OUT= KERNEL_FLAVOR='$(KERNEL_FLAVOR)' KDIR='$(KDIR)' scripts/common.sh $(1))
KBUILD_DIR := $(call common,KBUILD_DIR)
MODULE_OUT := $(call common,MODULE_OUT)
KBUILD_ARGS := $(call common,KBUILD_ARGS)
HOST_TARGET := $(call common,HOST_TARGET)
GUEST_RUSTFLAGS := $(call common,GUEST_RUSTFLAGS)
export KBUILD_DIR MODULE_OUT
# The static guest binaries and the host unit tests are one build: the same target,
# profile and flags, so the dependencies compile once.
GUEST_CARGO := RUSTFLAGS="$(GUEST_RUSTFLAGS)" cargo
GUEST_CARGO_ARGS := --release --quiet --target $(HOST_TARGET) --workspace

.PHONY: all deps rootfs kernel check check-kernel check-workspace module importer userspace guest-bins kselftest-install kselftest-check vm-test vm-selftest test test-debug stress unit-test run shell bench bench-run clean

all: module importer userspace

deps:
	@scripts/deps.sh

kernel: deps
	@scripts/kernel.sh

module: kernel
	@echo "==> building kmod/ against $(KBUILD_DIR)"
	@mkdir -p $(MODULE_OUT)/kmod
	@$(MAKE) -s -C $(KBUILD_DIR) M=$(CURDIR)/kmod MO=$(MODULE_OUT)/kmod $(KBUILD_ARGS) modules

# The guest tests' own dma-buf importer (selftests/importer/, ulive_importer: static and
# dynamic attachments, vmap), against the same kernel tree. Not part of the product.
importer: kernel
	@echo "==> building selftests/importer/ against $(KBUILD_DIR)"
	@mkdir -p $(MODULE_OUT)/importer
	@$(MAKE) -s -C $(KBUILD_DIR) M=$(CURDIR)/selftests/importer MO=$(MODULE_OUT)/importer $(KBUILD_ARGS) modules

# Host build of the userspace workspace (cli, uapi, selftests).
userspace:
	@cargo build --release --quiet

# Static binaries for the guest: glibc with crt-static (no extra rustup target needed).
guest-bins:
	+@$(GUEST_CARGO) build $(GUEST_CARGO_ARGS) --bins

# The guest suites as a kselftest collection (run_kselftest.sh, kselftest-list.txt, one
# entry point per suite, settings, config, the modules, the upstream udmabuf kselftest),
# for KBUILD_DIR's kernel (KDIR=... for your own).
kselftest-install: module importer guest-bins
	@test -n "$(INSTALL_PATH)" || { echo "usage: make kselftest-install INSTALL_PATH=DIR" >&2; exit 2; }
	@scripts/kselftest-install.sh $(INSTALL_PATH)

# Run an installed collection on this machine (root, module prerequisites: README) and
# judge it as the guest run is judged. KSFT_ARGS: run_kselftest.sh options.
kselftest-check:
	@test -n "$(INSTALL_PATH)" || { echo "usage: make kselftest-check INSTALL_PATH=DIR [KSFT_ARGS='-t udmabuf-live:live']" >&2; exit 2; }
	@scripts/kselftest-check.sh $(INSTALL_PATH) $(KSFT_ARGS)

# Formatters and linters (scripts/check.sh), before anything boots.
check: check-kernel check-workspace
check-kernel: kernel
	@scripts/check.sh kernel
check-workspace:
	@scripts/check.sh workspace

unit-test:
	+@$(GUEST_CARGO) test $(GUEST_CARGO_ARGS)

# The Debian 13 rootfs with Weston and Mesa's llvmpipe (wayland suite, make run), cached.
rootfs: deps
	@scripts/rootfs.sh

vm-test: module importer guest-bins rootfs
	@scripts/vm.sh test

# The harness must be able to fail: boot once per injected fault and expect red.
vm-selftest: module importer guest-bins
	@scripts/vm-selftest.sh

# make test in two steps, each with its independent parts side by side: first everything
# that builds or checks (on a fresh machine the rootfs download and the cargo builds
# overlap the kernel build), then the two boot jobs, the guest suites and the harness
# self-test (whose boots mostly wait). Nothing boots before make check has passed.
TEST_BUILDS := check-kernel check-workspace unit-test module importer guest-bins rootfs
TEST_BOOTS := vm-test vm-selftest
test:
	@$(MAKE) --no-print-directory -j3 $(TEST_BUILDS)
	@$(MAKE) --no-print-directory -j2 $(TEST_BOOTS)

# The guest suites on the debug flavour (KASAN, kmemleak, lockdep, DEBUG_VM, fault
# injection). Not part of `make test`: its kernel build alone takes 12-20 minutes on
# 2 cores, which would push a fresh CI run past its budget. Run it before a release.
test-debug:
	@$(MAKE) --no-print-directory KERNEL_FLAVOR=debug vm-test

# The stress suite on its own, for longer soaks: ULIVE_STRESS_SECS (default 20),
# ULIVE_STRESS_SEED, ULIVE_STRESS_ROLES (RELIABILITY.md).
stress: module importer guest-bins
	@ULIVE_SUITES="module stress" scripts/vm.sh test

run: module importer guest-bins rootfs
	@scripts/vm.sh run

# An interactive guest with the module loaded (Ctrl-A X or `exit` leaves).
shell: module importer guest-bins
	@scripts/vm.sh shell

# Benchmarks run on the bench flavour (selftests/config.bench: no lock debugging) unless
# BENCH_FLAVOR or KDIR says otherwise. BENCH_BOOTS guest boots (default 3); each cell is
# reported as the median over the boots with its spread (scripts/bench-report.sh).
BENCH_FLAVOR ?= bench
BENCH_BOOTS ?= 3
# The first boot also profiles the paths of the missed cells after its timed cells
# (`udmabuf-ctl bench --profile`, BENCH_PROFILE operations each; 0: no profile).
BENCH_PROFILE ?= 20
bench:
	@$(MAKE) --no-print-directory KERNEL_FLAVOR=$(BENCH_FLAVOR) bench-run

bench-run: module importer guest-bins
	@rm -f out/bench-boot-*-ktap.log
	@for i in $$(seq 1 $(BENCH_BOOTS)); do \
		echo "==> bench boot $$i of $(BENCH_BOOTS)"; \
		profile=; [ $$i = 1 ] && [ "$(BENCH_PROFILE)" != 0 ] && profile=$(BENCH_PROFILE); \
		BENCH_PROFILE=$$profile ULIVE_BENCH_BOOT=$$i scripts/vm.sh bench || exit 1; \
	done
	@cargo build --release --quiet -p ulive-bench-report
	@scripts/bench-report.sh

clean:
	-@$(MAKE) -s -C $(KBUILD_DIR) M=$(CURDIR)/kmod clean 2>/dev/null
	-@$(MAKE) -s -C $(KBUILD_DIR) M=$(CURDIR)/selftests/importer clean 2>/dev/null
	rm -rf out target
