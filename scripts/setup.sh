#!/usr/bin/env bash
# One-step set-up on a fresh Debian machine (Python >= 3.11).  Usage: scripts/setup.sh [dev]
#  - installs bubblewrap (the code judge's sandbox) when apt is available and we may use it;
#  - installs the CPU build of torch 2.13.0 unless a torch is already present (a GPU machine keeps its own);
#  - installs openmimo in editable mode with the data extra (the quickstart's data pipeline), or the dev extra
#    for tests (which holds it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq bubblewrap >/dev/null) \
    || echo "setup: could not install bubblewrap; the code judge will fall back to unshare" >&2
fi
# Debian's own python3 is "externally managed" (PEP 668); outside a virtual environment, install anyway.
if $PY -c 'import sys, sysconfig, os; sys.exit(not (sys.prefix == sys.base_prefix and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))'; then
  export PIP_BREAK_SYSTEM_PACKAGES=1
fi
if ! $PY -c "import torch" >/dev/null 2>&1; then
  $PY -m pip install -q "torch==2.13.0"
fi
extra="[data]"  # the quickstart's pre-training data goes through `openmimo data` (datatrove, the extractors)
[ "${1:-}" = "dev" ] && extra="[dev]"
$PY -m pip install -q -e ".$extra"
