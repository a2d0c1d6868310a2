# Every target creates .venv and installs what it needs when missing: one command on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install run test lint bench influxdb netns clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# InfluxDB 1.x server from Debian, used by the reporting tests (skipped quietly if apt is unavailable).
influxdb:
	@command -v influxd >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb) >/dev/null \
	      || echo "warning: could not install influxdb"; \
	  else echo "warning: influxd missing and cannot apt-get install it"; fi; }

# ip (iproute2) and nft (nftables) for the multi-host test (tests/netns: network namespaces, root only).
netns:
	@{ command -v ip >/dev/null 2>&1 && command -v nft >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 nftables) >/dev/null \
	      || echo "warning: could not install iproute2 / nftables"; \
	  else echo "warning: ip / nft missing and cannot apt-get install them"; fi; }

install: $(STAMP)

run: $(STAMP)
	$(BIN)/bfsx demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench strategies trade.py pos_server.py
	$(BIN)/mypy

# The process tests mostly wait on sockets and timers: three workers fit 2 cores and cut the wall time
# by more than half. loadfile keeps each file's module fixtures and netns tags in one worker.
test: $(STAMP) influxdb netns lint
	$(BIN)/pytest -n 3 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-out
