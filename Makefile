# Two commands set everything up on a fresh machine (Python 3.11 + pip + make):
#   make compare   -- create .venv, install perfsim, run the main job
#   make test      -- same environment, whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: compare test bench venv clean kernel-tools calibrate

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

compare: $(STAMP)
	$(BIN)/perfsim compare

test: $(STAMP) kernel-tools
	$(BIN)/python -m pytest

# The real-kernel calibration harness (perfsim/calibrate) needs these programs (program:package).
# As root, missing ones are installed with apt-get; otherwise a note, and those tests skip.
KERNEL_TOOLS := iperf3:iperf3 iptables:iptables ethtool:ethtool sockperf:sockperf ip:iproute2 gcc:gcc \
	taskset:util-linux sysctl:procps

kernel-tools:
	@missing=""; for tp in $(KERNEL_TOOLS); do \
		command -v $${tp%%:*} >/dev/null 2>&1 || missing="$$missing $${tp#*:}"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "kernel-tools: missing packages:$$missing (not root or no apt-get: real-kernel tests will skip)"; \
		exit 0; \
	fi; \
	echo "kernel-tools: installing$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q $$missing || { apt-get update -q && apt-get install -y -q $$missing; } || \
		echo "kernel-tools: could not install$$missing (real-kernel tests will skip)"

calibrate: $(STAMP) kernel-tools
	$(BIN)/perfsim calibrate

bench: $(STAMP)
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/modes.py
	$(BIN)/python benchmarks/maxmin.py
	$(BIN)/python benchmarks/fluid_scale.py
	$(BIN)/python benchmarks/fluid_agreement.py --quick

clean:
	rm -rf $(VENV) results .pytest_cache .hypothesis
