# udmabuf-live top-level build. Every target installs/builds what it needs first.
#   make run     build everything, boot the test kernel in QEMU, show the device at work
#   make test    host unit tests, then every guest suite in QEMU
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

.PHONY: all deps kernel module test-importer userspace guest-bins vm-test vm-selftest test unit-test run bench clean

all: module userspace

deps:
	@scripts/deps.sh

kernel: deps
	@scripts/kernel.sh

module: kernel
	@echo "==> building kmod/ against $(KBUILD_DIR)"
	@$(MAKE) -s -C $(KBUILD_DIR) M=$(CURDIR)/kmod $(KBUILD_ARGS) modules

# The guest tests' own dma-buf importer (static, dynamic, vmap): not part of the product.
test-importer: kernel
	@echo "==> building selftests/importer/ against $(KBUILD_DIR)"
	@$(MAKE) -s -C $(KBUILD_DIR) M=$(CURDIR)/selftests/importer $(KBUILD_ARGS) modules

# Host build of the userspace workspace (cli, uapi, selftests).
userspace:
	@cargo build --release --quiet

# Static binaries for the guest: glibc with crt-static (no extra rustup target needed).
guest-bins:
	@RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet --target $(HOST_TARGET) \
		--bin udmabuf-ctl --bin ulive-selftests

unit-test:
	@cargo test --quiet --workspace

vm-test: module test-importer guest-bins
	@KBUILD_DIR=$(KBUILD_DIR) scripts/vm.sh test

# The harness must be able to fail: boot once per injected fault and expect red.
vm-selftest: module test-importer guest-bins
	@KBUILD_DIR=$(KBUILD_DIR) scripts/vm-selftest.sh

test: unit-test vm-test vm-selftest

run: module guest-bins
	@KBUILD_DIR=$(KBUILD_DIR) scripts/vm.sh run

bench: module guest-bins
	@KBUILD_DIR=$(KBUILD_DIR) scripts/vm.sh bench

clean:
	-@$(MAKE) -s -C $(KBUILD_DIR) M=$(CURDIR)/kmod clean 2>/dev/null
	-@$(MAKE) -s -C $(KBUILD_DIR) M=$(CURDIR)/selftests/importer clean 2>/dev/null
	rm -rf out target
