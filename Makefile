# rackforge: the commands a developer and CI run.  See README.md.
PROFILE ?= hci
# tools/setup-host installs rackforge and diskimage-builder into .venv
VENV    := $(CURDIR)/.venv
PYTHON  ?= $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)
PYTEST  ?= $(PYTHON) -m pytest

.PHONY: all setup setup-test setup-e2e image iso test unit security integration e2e bench lint clean

all: test

# Host packages and the Python package itself (idempotent).
setup:
	./tools/setup-host

# The default profile: disk (raw, qcow2), ISO/USB and PXE bundle in images/$(PROFILE)/.
setup-test:
	./tools/setup-host --test

setup-e2e:
	./tools/setup-host --e2e

image: setup
	$(PYTHON) -m rackforge build $(PROFILE)

# Only the ISO of a profile (it is built together with the rest).
iso: image
	@ls -l images/$(PROFILE)/*.iso

# Unit tests, the security probes (tests/security: hostile input, and real services
# on loopback or in namespaces), then the integration tests CI runs (build minimal,
# boot it, form a cluster in nspawn containers).
test: setup-test
	$(PYTEST) -q tests/unit
	$(PYTEST) -q -m "not e2e" tests/security
	$(PYTEST) -q -m "integration and not e2e" tests/integration

unit:
	$(PYTEST) -q tests/unit

# Hostile input and a hostile network against the parsers, files and services
# (tests/security; the service ones need root, as make test does).
security:
	$(PYTEST) -q -m "not e2e" tests/security

# The long runs (every boot path, the installer's TUI, the virtual rack, the racks and
# the cloud): the tests marked e2e.  make test's integration tests are not run again.
e2e: setup-e2e
	$(PYTEST) -q -m e2e tests/integration tests/e2e

# Every benchmark, or one: make bench BENCHES=pxe_tftp.  Each prints ratios
# against a baseline measured in the same run.
BENCHES ?= build_cache pxe_tftp pxe_http pxe_hostile bmc_power cluster_join nodeagent_ha ceph_rack cloud bringup
bench: setup-test
	@set -e; for b in $(BENCHES); do echo "== bench/$$b.py"; $(PYTHON) bench/$$b.py; done

lint:
	$(PYTHON) -m flake8 --max-line-length 100 rackforge images/*.py installer pxe bmc bringup cluster firstboot nodeagent virt tests bench
	bash -n elements/*/*.d/* tools/setup-host .ci/run

clean:
	find images -mindepth 1 -maxdepth 1 -type d ! -name templates ! -name __pycache__ -exec rm -rf {} +
	rm -rf images/.build-* images/*.failed.log .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
