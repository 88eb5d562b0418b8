#!/usr/bin/env bash
# Checks systemd/homd.service: systemd-analyze's offline security score must be 1.5 or
# lower (timesyncd rates 2.3, networkd 2.8) and the unit must be Type=notify with a
# watchdog and the env file.
#   tests/systemd_unit_test.sh SOURCE_DIR
set -euo pipefail
unit="$1/systemd/homd.service"
fail() { echo "systemd_unit_test: $*" >&2; exit 1; }
for line in Type=notify WatchdogSec= EnvironmentFile=-/etc/homd/homd.env Restart=on-failure; do
  grep -q "^$line" "$unit" || fail "$unit lacks $line"
done
out=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1) || true
score=$(sed -n 's/.*Overall exposure level for homd.service: \([0-9.]*\).*/\1/p' <<<"$out")
[[ -n "$score" ]] || fail "no score in systemd-analyze output: $out"
awk -v s="$score" 'BEGIN { exit !(s <= 1.5) }' || fail "exposure $score > 1.5"
echo "systemd_unit_test: exposure level $score (<= 1.5)"
