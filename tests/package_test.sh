#!/usr/bin/env bash
# Builds the .deb from this build tree (cpack), unpacks it into a throwaway root with
# dpkg -x and checks its files, its control data and that the binaries run.
#   tests/package_test.sh BUILD_DIR                 the build machine's package
#   tests/package_test.sh BUILD_DIR ARCH EMULATOR   a cross build's (cmake/toolchain-*.cmake):
#                                                   its binaries run under qemu-user
set -euo pipefail
build=$1
arch=${2:-$(dpkg --print-architecture)}
run=()
[[ -n ${3:-} ]] && run=("$3")
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

(cd "$build" && cpack -G DEB -B "$root/out" >/dev/null)
deb=$(ls "$root"/out/*.deb)
dpkg -x "$deb" "$root/fs"

fail() { echo "package_test: $*" >&2; exit 1; }
for f in usr/bin/homd usr/bin/hom usr/bin/hom-gateway \
         usr/lib/systemd/system/homd.service usr/lib/systemd/system/hom-gateway.service \
         etc/homd/homd.env etc/hom-gateway/hom-gateway.env \
         usr/share/doc/http-over-mqtt/homd.env usr/share/doc/http-over-mqtt/hom-gateway.env \
         usr/share/doc/http-over-mqtt/acl_file; do
  [[ -f "$root/fs/$f" ]] || fail "missing /$f"
done
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
for f in /etc/homd/homd.env /etc/hom-gateway/hom-gateway.env; do
  grep -qx "$f" <<<"$conffiles" || fail "$f is not a conffile"
  [[ $(stat -c %a "$root/fs$f") == 600 ]] || fail "$f is not mode 600 (it may hold a password)"
done

# Runtime dependencies: Debian's shared-library packages, found by dpkg-shlibdeps. Boost.Beast
# and Asio are header-only, so no Boost package may appear; and every library a binary loads
# must come from a package named in Depends.
[[ $(dpkg-deb -f "$deb" Architecture) == "$arch" ]] ||
  fail "Architecture: $(dpkg-deb -f "$deb" Architecture), expected $arch"
info=$(dpkg-deb --info "$deb")
depends=$(dpkg-deb -f "$deb" Depends)
[[ "$info" == *"Depends: "* ]] || fail "dpkg-deb --info shows no Depends"
for lib in libpaho-mqttpp3 libcurl4 libspdlog libsystemd0 libssl3; do
  [[ "$depends" == *"$lib"* ]] || fail "Depends lacks $lib: $depends"
done
[[ "$depends" != *boost* ]] || fail "Depends names Boost (header-only, not a runtime dependency): $depends"
depends_names=$(tr ',' '\n' <<<"$depends" | awk '{print $1}')
for bin in homd hom hom-gateway; do
  while read -r soname; do
    [[ $soname == *boost* ]] && fail "$bin loads $soname: Boost must stay header-only"
    # The target's copy of the library (libfoo:arm64 in a cross build), named without ":ARCH".
    owners=$(dpkg-query -S "*/$soname" 2>/dev/null | grep -E "^[^:,]+(:$arch)?(: |, )" |
      cut -d: -f1 | tr ',' '\n' | tr -d ' ' | sort -u || true)
    [[ -n $owners ]] || fail "$bin needs $soname, which no installed package provides"
    found=""
    for p in $owners; do
      # A suffixed name counts (Debian 12's libspdlog1.10 ships as libspdlog1.10-fmt9).
      for name in $depends_names; do [[ $name == "$p" || $name == "$p"-* ]] && found=$p; done
    done
    [[ -n $found ]] || fail "$bin needs $soname ($owners), not in Depends: $depends"
  done < <(objdump -p "$root/fs/usr/bin/$bin" | awk '$1 == "NEEDED" {print $2}')
done

"${run[@]}" "$root/fs/usr/bin/homd" --version | grep -q '^homd ' || fail "homd --version"
"${run[@]}" "$root/fs/usr/bin/hom" --version | grep -q '^hom ' || fail "hom --version"
"${run[@]}" "$root/fs/usr/bin/hom-gateway" --version | grep -q '^hom-gateway ' || fail "hom-gateway --version"
for unit in homd hom-gateway; do
  grep -q '^Type=notify' "$root/fs/usr/lib/systemd/system/$unit.service" ||
    fail "$unit.service is not Type=notify"
done
# The packaged example configuration, read as the unit reads it, must be valid: the gateway
# then only wants GATEWAY_AUTH=none (or a tokens file), and refuses to start without either.
# shellcheck disable=SC2016  # expanded by the inner shell
check_gateway() {
  env -i bash -c 'set -a; . "$1"; shift; exec "$@"' _ "$root/fs/etc/hom-gateway/hom-gateway.env" \
    "$@" "${run[@]}" "$root/fs/usr/bin/hom-gateway" --check-config
}
check_gateway env GATEWAY_AUTH=none >"$root/check.out" 2>&1 ||
  fail "hom-gateway --check-config with GATEWAY_AUTH=none: exit $?: $(cat "$root/check.out")"
grep -qx 'GATEWAY_AUTH=none' "$root/check.out" || fail "--check-config output: $(cat "$root/check.out")"
status=0
check_gateway env >"$root/check.out" 2>&1 || status=$?
[[ $status == 2 ]] || fail "hom-gateway without tokens or GATEWAY_AUTH=none: exit $status, expected 2"
grep -q GATEWAY_TOKENS_FILE "$root/check.out" || fail "the refusal does not name GATEWAY_TOKENS_FILE"
echo "package_test: $(basename "$deb") OK; Depends: $depends"
