#!/usr/bin/env bash
# Installs the Debian packages warren needs to build and test, when missing:
# librabbitmq-dev (the C library and its pkg-config file), rabbitmq-server
# (the private test broker), amqp-tools (`make run` publishes demo messages
# with it), systemd (systemd-analyze verify for the unit files) and openssl
# (the TLS tests make their CA at test time); time and procps for make bench;
# python3 and nodejs run the example persistent workers in the tests.
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
if [ ${#need[@]} -gt 0 ]; then
    echo "deps.sh: installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
