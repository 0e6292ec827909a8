#!/usr/bin/env bash
# The test command. The HTML report checks drive a real headless Chromium;
# when none is installed, this installs Debian's chromium package (as root
# or through sudo), then runs every test. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${TAPEDECK_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "tests/run.sh: the HTML checks need Chromium; install the chromium package," >&2
    echo "or set TAPEDECK_CHROMIUM to a Chromium binary, and run again" >&2
    exit 2
  fi
  echo "tests/run.sh: installing chromium for the HTML report checks" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

exec cargo test --locked "$@"
