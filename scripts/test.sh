#!/usr/bin/env bash
# Set up and run every pop3tap check on a fresh Debian 12 machine (Python 3.11+):
#   bash scripts/test.sh [extra pytest args]
# As root it installs the real peers (Dovecot, GNU Mailutils pop3d, curl, openssl, socat,
# haproxy, fetchmail, mpop, tcpdump, and Chromium with its WebDriver for the HTML view; tmux
# for the terminal tests of `pop3tap console` and of record's live view; git for the textconv
# recipe) with apt, and gcc plus Python's headers for the C body scanner.
# Then it creates .venv, installs pop3tap with its dev extras (the protocol core compiled with
# mypyc), and runs ruff, mypy and pytest twice, on two workers (pytest-xdist): against the
# compiled core, then against the pure-Python one (POP3TAP_PURE_PYTHON=1). Both runs set
# POP3TAP_REQUIRE_REAL_PEERS=1, POP3TAP_REQUIRE_C_SCANNER=1 and
# POP3TAP_REQUIRE_COMPILED_CORE=1, so a missing real peer, or a C scanner or compiled core
# that did not build, fails instead of skipping. POP3TAP_TEST_WORKERS=0 runs pytest in one
# process. Last, with no arguments, it builds the sdist and from it the compiled and the pure
# wheel, and uses each from a fresh venv (scripts/wheel-smoke.sh).
set -euo pipefail

cd "$(dirname "$0")/.."

pkgs=()
for tool in dovecot:dovecot-pop3d doveadm:dovecot-core curl:curl openssl:openssl \
            socat:socat haproxy:haproxy gcc:gcc fetchmail:fetchmail mpop:mpop \
            tcpdump:tcpdump chromium:chromium chromedriver:chromium-driver tmux:tmux \
            pop3d:mailutils-pop3d git:git; do
    if ! command -v "${tool%%:*}" >/dev/null 2>&1 && [ ! -x "/usr/sbin/${tool%%:*}" ]; then
        pkgs+=("${tool#*:}")
    fi
done
# The C body scanner is built from source: Debian's own python3 needs its headers for that.
if ! python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    pkgs+=(python3-dev)
fi
if [ "${#pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "==> apt-get install ${pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q "${pkgs[@]}"
        # The package may start a system Dovecot on 110/995; the tests use their own instance.
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
            systemctl disable --now mailutils-pop3d.service >/dev/null 2>&1 || true
        fi
    else
        echo "==> warning: not root, cannot install: ${pkgs[*]} (real-peer tests will fail)" >&2
    fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

. scripts/_venv.sh
pop3tap_venv "[dev]"

echo "==> ruff"
.venv/bin/ruff check pop3tap tests benchmarks

echo "==> mypy"
.venv/bin/mypy

export POP3TAP_REQUIRE_REAL_PEERS=1 POP3TAP_REQUIRE_C_SCANNER=1 POP3TAP_REQUIRE_COMPILED_CORE=1
workers="${POP3TAP_TEST_WORKERS:-2}"
echo "==> pytest (compiled protocol core)"
.venv/bin/python -m pytest -q -n "$workers" "$@"
echo "==> pytest (pure Python: POP3TAP_PURE_PYTHON=1)"
POP3TAP_PURE_PYTHON=1 .venv/bin/python -m pytest -q -n "$workers" "$@"

# The released form: sdist -> wheel -> a fresh venv outside the checkout (demo, --help, replay).
# Skipped only when pytest was asked for a subset (e.g. `-k name`), as during development.
if [ "$#" -eq 0 ]; then
    bash scripts/wheel-smoke.sh
fi
