# warren: make build | release | static | test | check-contrib | test-cluster | fuzz | chaos | bench | e2e-systemd | run | install | clean
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
SYSTEMDDIR ?= /lib/systemd/system
SWIFT ?= swift
CONFIG ?= config/warren.ini
BROKER_URL ?=
BROKER_PORT ?= 25672
SWIFT_BUILD_FLAGS ?=
FUZZ_SECONDS ?= 60

export BROKER_URL BROKER_PORT CONFIG SWIFT_BUILD_FLAGS

.PHONY: all deps build release static test check-contrib test-cluster fuzz chaos bench e2e-systemd run install clean verify-units

all: build

deps:
	scripts/deps.sh

build: deps
	$(SWIFT) build $(SWIFT_BUILD_FLAGS)

release: deps
	$(SWIFT) build -c release $(SWIFT_BUILD_FLAGS)

# What `make install` installs: the Swift runtime linked in, so the binary
# runs on a host without a Swift toolchain (it needs Debian's librabbitmq4).
static: deps
	$(SWIFT) build -c release --product warren --static-swift-stdlib --scratch-path .build-static $(SWIFT_BUILD_FLAGS)

test: deps verify-units check-contrib
	scripts/test.sh
	scripts/check-install.sh
	FUZZ_SECONDS=30 scripts/fuzz.sh

# Three private RabbitMQ nodes on loopback, a quorum queue, two warrens given
# every URL, and the node leading the queue stopped and started under load:
# message by message, the consumption pause measured (CI runs it after make test).
test-cluster: deps
	scripts/test-cluster.sh

# libFuzzer on the config loader for FUZZ_SECONDS (make test runs 30 s);
# a crash, or a rejection without a line number, fails with the input kept
# in .build-fuzz/.
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

# Many rounds of random faults under load, each with a ledger (make test runs 2).
ROUNDS ?= 20
chaos: deps
	WARREN_CHAOS_ROUNDS=$(ROUNDS) TEST_FILTER=ChaosTests scripts/test.sh

# Throughput, CPU and RSS against a plain rabbitmq-c consumer, and stop
# latency; prints a table and writes bench-results/latest.md. Not part of test.
bench: deps
	python3 Benchmarks/run.py

# warren under a real systemd in a systemd-nspawn container: stop, reload and
# restart checked message by message (CI runs it after make test).
e2e-systemd: deps
	scripts/e2e-systemd.sh

run: build
	scripts/run-demo.sh

# systemd-analyze verify and the exposure score of the shipped units.
verify-units: deps
	scripts/verify-units.sh

# contrib/: the Prometheus alerting rules (promtool check and unit tests)
# and the Grafana dashboard (valid JSON and PromQL, only metrics warren
# exports and the README documents).
check-contrib: deps
	scripts/check-contrib.sh

install: static
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(SYSCONFDIR)/warren $(DESTDIR)$(SYSTEMDDIR) $(DESTDIR)$(PREFIX)/share/doc/warren
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/warren/README.md
	install -m 0755 .build-static/release/warren $(DESTDIR)$(PREFIX)/bin/warren
	strip --strip-debug $(DESTDIR)$(PREFIX)/bin/warren
	install -m 0644 systemd/warren.service systemd/warren@.service $(DESTDIR)$(SYSTEMDDIR)/
	install -m 0644 config/warren.ini $(DESTDIR)$(SYSCONFDIR)/warren/warren.ini.example
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/warren/warren.ini ]; then \
		install -m 0640 config/warren.ini $(DESTDIR)$(SYSCONFDIR)/warren/warren.ini; \
	else \
		echo "keeping the existing $(DESTDIR)$(SYSCONFDIR)/warren/warren.ini"; \
	fi

clean:
	rm -rf .build .build-static .build-fuzz
