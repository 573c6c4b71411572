#!/usr/bin/env bash
# Make promtool available to the tests that check the alert rules and the dashboard's queries
# (tests/unit/test_ops_files.py): one on PATH is used as is; otherwise Debian's `prometheus`
# package is downloaded (not installed: no Prometheus service is set up or started) and only
# unpacked into compose/.cache/promtool. Never fatal: without promtool that check is skipped.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dest=compose/.cache/promtool
if command -v promtool >/dev/null || [ -x "$dest/usr/bin/promtool" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "promtool: not found and no apt-get here; install Prometheus' promtool to check the alert rules"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt-get download needs package lists; a fresh machine has none until `apt-get update`.
if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
    if [ "$(id -u)" = 0 ]; then apt-get update >/dev/null 2>&1; fi
    (cd "$work" && apt-get download prometheus >/dev/null 2>&1) || {
        echo "promtool: could not download Debian's prometheus package; the promtool check will be skipped"
        exit 0
    }
fi
mkdir -p "$dest" && dpkg-deb -x "$work"/prometheus_*.deb "$work/x" &&
    install -D -m 755 "$work/x/usr/bin/promtool" "$dest/usr/bin/promtool" &&
    echo "promtool: $("$dest/usr/bin/promtool" --version 2>&1 | head -1) in $dest"
