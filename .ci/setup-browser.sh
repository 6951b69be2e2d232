#!/usr/bin/env bash
# Installs the Debian Chromium that the browser tests (pytest -m browser) drive through
# playwright-python. Idempotent: does nothing when /usr/bin/chromium is already there.
# The browser comes from apt on purpose: playwright's own browser download is not used.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "setup-browser: /usr/bin/chromium present ($(/usr/bin/chromium --version 2>/dev/null || echo unknown version))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium
/usr/bin/chromium --version
