#!/usr/bin/env bash
# Installs nats-server (Debian package) if it is not there yet: the load
# tool's integration test and its `compare` mode need it. Idempotent; CI
# calls it before the tests.
set -euo pipefail
if command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq nats-server >/dev/null
# The package enables a systemd unit; nothing here relies on it running.
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || {
    echo "install-nats.sh: nats-server still not found after apt-get install" >&2
    exit 1
}
