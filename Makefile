# NomadOS. The two commands a fresh machine needs are `make run` and `make test`
# (see README.md). Everything heavy is cached outside the clone (kernel: ~/.cache/nomados).

SHELL := /bin/bash
OUT ?= out
CARGO ?= cargo

.PHONY: run image kernel test deps lint unit boot-tests e2e bench demo clean help

# Exit 77 means "a prerequisite is missing, nothing ran": a pass on a developer's machine,
# a failure in CI (CI=true), where tools/deps.sh has installed everything.
allow_skip = rc=$$?; [ $$rc -eq 0 ] || { [ $$rc -eq 77 ] && [ "$${CI:-}" != true ]; } || exit $$rc

help:
	@echo "make run        build the default image and boot it in QEMU (console attached)"
	@echo "make test       lint, unit + integration tests, QEMU boot tests, end-to-end appliance boots"
	@echo "make e2e        only the end-to-end boots (BIOS, UEFI, PXE, PXE-UEFI, reboot, install, upgrade)"
	@echo "make image      build every image format into $(OUT)/"
	@echo "make kernel     build (or reuse the cached) kernel; prints its path"
	@echo "make bench      print the benchmark figures"
	@echo "make demo       run the pack applier against the Nomad test double (no VM)"

## The main job: build the default image and boot it with SeaBIOS, console on this terminal.
## Missing Debian packages are installed first (as root; otherwise the command is printed).
run:
	tools/deps.sh run
	OUT=$(OUT) FORMATS=qcow2 ./buildimg.sh
	qemu/run-bios.sh $(OUT)/nomados.qcow2

image:
	tools/deps.sh run
	OUT=$(OUT) ./buildimg.sh

kernel:
	kernel-config/build.sh

## The test command (what CI runs): lint, every cargo test (root-only tiers skip with a
## message when not root), the QEMU boot tests, then the appliance end to end.
test: deps lint unit boot-tests e2e

deps:
	tools/deps.sh test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	NOMADOS_KERNEL=$$(kernel-config/build.sh) $(CARGO) test --workspace

boot-tests:
	tests/boot/run.sh
	tests/image/boot-bios-uefi.sh; $(call allow_skip)
	tests/image/slots-trial.sh; $(call allow_skip)
	tests/image/slots-gate.sh; $(call allow_skip)

## The real image (nomad-init as PID 1, the Nomad test double unless NOMAD_BIN) booted over
## every path: our DHCP lease, Nomad healthy, packs applied, clean power-off, data kept;
## then three machines from that one image forming one cluster (tests/cluster/).
e2e:
	tests/e2e/run.sh; $(call allow_skip)
	tests/image/install-qemu.sh; $(call allow_skip)
	FIRMWARE=uefi tests/image/install-qemu.sh; $(call allow_skip)
	tests/cluster/three-nodes.sh; $(call allow_skip)
	tests/image/upgrade-qemu.sh; $(call allow_skip)

## Figures (benchmarks print, they never assert).
bench:
	$(CARGO) build --release -p nomad-init -p nomad-double
	python3 init/benches/apply_bench.py target/release/nomad-init target/release/nomad-double
	python3 init/benches/hostile_bench.py target/release/nomad-init target/release/nomad-double
	$(CARGO) bench -p nomad-init --bench pack_render
	init/benches/pid1_figures.sh
	init/benches/dhcp_vs_udhcpc.sh
	image/figures.sh
	tests/e2e/boot-figures.sh

## Until a Nomad binary is at hand: the applier against the test double, on this machine.
demo:
	$(CARGO) build -p nomad-init -p nomad-double
	init/demo.sh

clean:
	rm -rf $(OUT)
	$(CARGO) clean
