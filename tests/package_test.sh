#!/usr/bin/env bash
# Builds the .deb from this build tree (cpack), unpacks it into a throwaway root with
# dpkg -x and checks its files, its control data and that the binaries run.
#   tests/package_test.sh BUILD_DIR
set -euo pipefail
build=$1
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

(cd "$build" && cpack -G DEB -B "$root/out" >/dev/null)
deb=$(ls "$root"/out/*.deb)
dpkg -x "$deb" "$root/fs"

fail() { echo "package_test: $*" >&2; exit 1; }
for f in usr/bin/homd usr/bin/hom usr/lib/systemd/system/homd.service etc/homd/homd.env \
         usr/share/doc/http-over-mqtt/homd.env usr/share/doc/http-over-mqtt/acl_file; do
  [[ -f "$root/fs/$f" ]] || fail "missing /$f"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/homd/homd.env ||
  fail "/etc/homd/homd.env is not a conffile"
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libpaho-mqttpp3 libcurl4 libspdlog libsystemd0; do
  [[ "$depends" == *"$lib"* ]] || fail "Depends lacks $lib: $depends"
done
"$root/fs/usr/bin/homd" --version | grep -q '^homd ' || fail "homd --version"
"$root/fs/usr/bin/hom" --version | grep -q '^hom ' || fail "hom --version"
grep -q '^Type=notify' "$root/fs/usr/lib/systemd/system/homd.service" || fail "unit is not Type=notify"
echo "package_test: $(basename "$deb") OK; Depends: $depends"
