#!/usr/bin/env bash
# Installs the Debian packages warren needs to build and test, when missing:
# librabbitmq-dev (the C library and its pkg-config file), rabbitmq-server
# (the private test broker), amqp-tools (`make run` publishes demo messages
# with it), systemd (systemd-analyze verify for the unit files) and openssl
# (the TLS tests make their CA at test time); time and procps for make bench;
# python3 and nodejs run the example persistent workers in the tests;
# prometheus for promtool (make check-contrib: the alerting rules).
set -euo pipefail
need=()
dpkg -s librabbitmq-dev >/dev/null 2>&1 || need+=(librabbitmq-dev)
dpkg -s pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v rabbitmq-server >/dev/null 2>&1 || need+=(rabbitmq-server)
command -v amqp-publish >/dev/null 2>&1 || need+=(amqp-tools)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/bin/time ] || need+=(time)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
    echo "deps.sh: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    # Only their files are wanted: packages that ship a service (prometheus,
    # rabbitmq-server) must not start one. Where no policy-rc.d says so
    # already, one that refuses every start (exit 101) stands for the install.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# scripts/deps.sh: no service starts while it installs packages\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        trap '$SUDO rm -f "$policy"' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
