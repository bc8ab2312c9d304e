# udmabuf-live top-level build. Every target installs/builds what it needs first.
#   make run     build everything, boot the test kernel in QEMU, show the device at work
#   make test    formatters and linters (make check), host unit tests, then every guest suite in QEMU
#   make shell   an interactive guest with the module loaded, to try udmabuf-ctl
#   make kselftest-install INSTALL_PATH=DIR   the suites as a kselftest collection
#   make kselftest-check INSTALL_PATH=DIR     run it on this machine, judged as in the guest
# KDIR=/path/to/kernel/build uses your own Rust-enabled kernel build tree instead of ours.
# KERNEL_FLAVOR=debug selects the debug kernel (selftests/config + selftests/config.debug).

SHELL := /bin/bash
CACHE ?= $(or $(UDMABUF_LIVE_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/udmabuf-live)
KERNEL_FLAVOR ?= default
export KERNEL_FLAVOR
KBUILD_DIR := $(if $(KDIR),$(KDIR),$(CACHE)/build/$(KERNEL_FLAVOR))
TOOLS := $(CACHE)/tools
KBUILD_ARGS := LLVM=-19 RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc BINDGEN=$(TOOLS)/bin/bindgen
HOST_TARGET := x86_64-unknown-linux-gnu
# Module objects go to a directory per kernel (Kbuild MO=), so switching flavours or
# KDIR never mixes objects built for different kernels.
MODULE_OUT := $(CURDIR)/out/modules/$(if $(KDIR),kdir-$(subst /,_,$(KDIR)),$(KERNEL_FLAVOR))
export MODULE_OUT

.PHONY: all deps rootfs kernel check module importer userspace guest-bins kselftest-install kselftest-check vm-test vm-selftest test test-debug stress unit-test run shell bench bench-run clean

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
	@RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet --target $(HOST_TARGET) \
		--bin udmabuf-ctl --bin ulive-selftests

# The guest suites as a kselftest collection (run_kselftest.sh, kselftest-list.txt, one
# entry point per suite, settings, config, the modules, the upstream udmabuf kselftest),
# for KBUILD_DIR's kernel (KDIR=... for your own).
kselftest-install: module importer guest-bins
	@test -n "$(INSTALL_PATH)" || { echo "usage: make kselftest-install INSTALL_PATH=DIR" >&2; exit 2; }
	@KBUILD_DIR=$(KBUILD_DIR) scripts/kselftest-install.sh $(INSTALL_PATH)

# Run an installed collection on this machine (root, module prerequisites: README) and
# judge it as the guest run is judged. KSFT_ARGS: run_kselftest.sh options.
kselftest-check:
	@test -n "$(INSTALL_PATH)" || { echo "usage: make kselftest-check INSTALL_PATH=DIR [KSFT_ARGS='-t udmabuf-live:live']" >&2; exit 2; }
	@KBUILD_DIR=$(KBUILD_DIR) scripts/kselftest-check.sh $(INSTALL_PATH) $(KSFT_ARGS)

# Formatters and linters (scripts/check.sh), before anything boots.
check: kernel
	@KBUILD_DIR=$(KBUILD_DIR) scripts/check.sh

unit-test:
	@cargo test --quiet --workspace

# The Debian 13 rootfs with Weston and Mesa's llvmpipe (wayland suite, make run), cached.
rootfs: deps
	@scripts/rootfs.sh

vm-test: module importer guest-bins rootfs
	@KBUILD_DIR=$(KBUILD_DIR) scripts/vm.sh test

# The harness must be able to fail: boot once per injected fault and expect red.
vm-selftest: module importer guest-bins
	@KBUILD_DIR=$(KBUILD_DIR) scripts/vm-selftest.sh

test: check unit-test vm-test vm-selftest

# The guest suites on the debug flavour (KASAN, kmemleak, lockdep, DEBUG_VM, fault
# injection). Not part of `make test`: its kernel build alone takes 12-20 minutes on
# 2 cores, which would push a fresh CI run past its budget. Run it before a release.
test-debug:
	@$(MAKE) --no-print-directory KERNEL_FLAVOR=debug vm-test

# The stress suite on its own, for longer soaks: ULIVE_STRESS_SECS (default 20),
# ULIVE_STRESS_SEED, ULIVE_STRESS_ROLES (RELIABILITY.md).
stress: module importer guest-bins
	@ULIVE_SUITES="module stress" KBUILD_DIR=$(KBUILD_DIR) scripts/vm.sh test

run: module importer guest-bins rootfs
	@KBUILD_DIR=$(KBUILD_DIR) scripts/vm.sh run

# An interactive guest with the module loaded (Ctrl-A X or `exit` leaves).
shell: module importer guest-bins
	@KBUILD_DIR=$(KBUILD_DIR) scripts/vm.sh shell

# Benchmarks run on the bench flavour (selftests/config.bench: no lock debugging) unless
# BENCH_FLAVOR or KDIR says otherwise. BENCH_BOOTS guest boots (default 3); each cell is
# reported as the median over the boots with its spread (scripts/bench-report.sh).
BENCH_FLAVOR ?= bench
BENCH_BOOTS ?= 3
bench:
	@$(MAKE) --no-print-directory KERNEL_FLAVOR=$(BENCH_FLAVOR) bench-run

bench-run: module importer guest-bins
	@rm -f out/bench-boot-*-ktap.log
	@for i in $$(seq 1 $(BENCH_BOOTS)); do \
		echo "==> bench boot $$i of $(BENCH_BOOTS)"; \
		ULIVE_BENCH_BOOT=$$i KBUILD_DIR=$(KBUILD_DIR) scripts/vm.sh bench || exit 1; \
	done
	@cargo build --release --quiet -p ulive-bench-report
	@KBUILD_DIR=$(KBUILD_DIR) scripts/bench-report.sh

clean:
	-@$(MAKE) -s -C $(KBUILD_DIR) M=$(CURDIR)/kmod clean 2>/dev/null
	-@$(MAKE) -s -C $(KBUILD_DIR) M=$(CURDIR)/selftests/importer clean 2>/dev/null
	rm -rf out target
