#!/usr/bin/env bash
# Checks the systemd units (homd.service, hom-gateway.service): systemd-analyze's offline
# security score must be 1.5 or lower (timesyncd rates 2.3, networkd 2.8), each unit must be
# Type=notify with its env file, and a watchdog is set exactly when the daemon pings it (a
# WatchdogSec= without pings would kill a healthy daemon).
#   tests/systemd_unit_test.sh SOURCE_DIR
set -euo pipefail
src=$1
fail() { echo "systemd_unit_test: $*" >&2; exit 1; }

# check_unit NAME MAIN_SOURCE REQUIRED_LINE...
check_unit() {
  local name=$1 main=$2 unit="$src/systemd/$1" line out score
  shift 2
  [[ -f $unit ]] || fail "$unit is missing"
  for line in Type=notify NotifyAccess=main Restart=on-failure RestartPreventExitStatus=2 \
              DynamicUser=yes CapabilityBoundingSet= "$@"; do
    grep -qx "$line" "$unit" || fail "$unit lacks the line $line"
  done
  if grep -q 'WATCHDOG=1' "$src/$main"; then
    grep -q '^WatchdogSec=' "$unit" || fail "$unit: $main pings the watchdog but there is no WatchdogSec="
  else
    ! grep -q '^WatchdogSec=' "$unit" || fail "$unit: WatchdogSec= but $main never pings it"
  fi
  out=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1) || true
  score=$(sed -n "s/.*Overall exposure level for $name: \([0-9.]*\).*/\1/p" <<<"$out")
  [[ -n "$score" ]] || fail "no score for $name in systemd-analyze output: $out"
  awk -v s="$score" 'BEGIN { exit !(s <= 1.5) }' || fail "$name: exposure $score > 1.5"
  echo "systemd_unit_test: $name exposure level $score (<= 1.5)"
}

check_unit homd.service src/homd/main.cpp \
  EnvironmentFile=-/etc/homd/homd.env ExecStart=/usr/bin/homd
# The gateway listens on TCP and talks to the broker: both address families, and AF_UNIX for
# the notify socket, nothing more.
check_unit hom-gateway.service src/gateway/main.cpp \
  EnvironmentFile=-/etc/hom-gateway/hom-gateway.env ExecStart=/usr/bin/hom-gateway \
  "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"
