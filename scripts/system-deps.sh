#!/usr/bin/env bash
# Debian packages the test suite (and `make bench`) need. Installs only what is
# missing, so it is quick when everything is there; needs root (or sudo) the
# first time.
set -euo pipefail

declare -A need=()   # command -> package
# (entries are added by the features that need them)
need[chromium]=chromium   # monitor-agent report --html: headless browser test
need[promtool]=prometheus      # the Prometheus plugin's output is checked by promtool
need[wrk]=wrk                  # bench/overhead.py: HTTP load on a gevent.pywsgi server

missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
