#!/usr/bin/env bash
# Make promtool and prometheus available to the tests of the alert rules and the dashboard
# (tests/unit/test_ops_files.py, tests/integration/test_ops_live_prometheus.py): Debian's
# `prometheus` package is downloaded (not installed: no Prometheus service is set up or
# started) and its two binaries unpacked into compose/.cache/prometheus. Never fatal: without
# them those checks are skipped.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dest=compose/.cache/prometheus
if [ -x "$dest/promtool" ] && [ -x "$dest/prometheus" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "prometheus: no apt-get here; the checks of the alert rules and the dashboard will be skipped"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt-get download needs package lists; a fresh machine has none until `apt-get update`.
if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then apt-get update >/dev/null 2>&1; fi
    (cd "$work" && apt-get download prometheus >/dev/null 2>&1) || {
        echo "prometheus: could not download Debian's package; the checks of the rules and dashboard will be skipped"
        exit 0
    }
fi
mkdir -p "$dest" && dpkg-deb -x "$work"/prometheus_*.deb "$work/x" &&
    install -m 755 "$work/x/usr/bin/promtool" "$work/x/usr/bin/prometheus" "$dest/" &&
    echo "prometheus: $("$dest/prometheus" --version 2>&1 | head -1) and promtool in $dest"
