#!/usr/bin/env bash
# Builds the libFuzzer targets (Clang, ASan+UBSan) in build-fuzz and runs each one for
# SECONDS_PER_TARGET (default 60) on a copy of its seed corpus, so tests/fuzz/corpus stays as
# committed. Prints executions, coverage and crashes per target; exits 1 when a target crashed.
#
#   tests/fuzz/run.sh [SECONDS_PER_TARGET]
#
# Environment:
#   FUZZ_TARGETS="fuzz_path fuzz_request"   run only these (default: all of them)
#   FUZZ_JOBS=2                             targets run at once (default 1); at most one per core
#   FUZZ_FLAGS="-fork=1 -ignore_crashes=1"  extra libFuzzer flags, e.g. to go on past a known crash
#   BUILD_DIR=build-fuzz                    the build tree
# Logs and crash inputs are kept in BUILD_DIR/fuzz-runs/<time>/ (<target>.log, <target>/crash-*).
# Reproduce one with: BUILD_DIR/tests/fuzz/<target> <crash file>
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [SECONDS_PER_TARGET]  (a positive whole number, got '$seconds')" >&2
  exit 2
fi
build="${BUILD_DIR:-$root/build-fuzz}"
[[ "$build" = /* ]] || build="$root/$build"
read -r -a targets <<<"${FUZZ_TARGETS:-fuzz_topic fuzz_request fuzz_path fuzz_response fuzz_base64 fuzz_cli fuzz_gateway fuzz_ssh_keys fuzz_sealed fuzz_stream}"
parallel="${FUZZ_JOBS:-1}"
read -r -a extra_flags <<<"${FUZZ_FLAGS:-}"

# Longest input per target: enough for the interesting structure (a 101-level JSON, a payload
# over the small policy's 512-byte limit), small enough to keep executions fast.
max_len() {
  case "$1" in
    fuzz_topic) echo 1024 ;;
    fuzz_request) echo 8192 ;;
    fuzz_response) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

CC="${CC:-clang}" CXX="${CXX:-clang++}" cmake -S "$root" -B "$build" -G Ninja -DHOM_FUZZ=ON \
  -DHOM_BUILD_TESTS=OFF -DHOM_BUILD_DEMO=OFF >/dev/null
cmake --build "$build" --target "${targets[@]}"

out="$build/fuzz-runs/$(date +%Y%m%d-%H%M%S)"
work="$(mktemp -d "${TMPDIR:-/tmp}/hom-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Runs one target; writes "<executions> <cov> <ft> <corpus> <crashes> <exit status>" to
# $work/<target>.result.
run_target() {
  local t="$1"
  local corpus="$work/$t" log="$out/$t.log" dict="$root/tests/fuzz/$t.dict"
  mkdir -p "$corpus" "$out/$t"
  if [[ -d "$root/tests/fuzz/corpus/$t" ]]; then cp -R "$root/tests/fuzz/corpus/$t/." "$corpus/"; fi
  local flags=(-max_total_time="$seconds" -max_len="$(max_len "$t")" -rss_limit_mb=2048
    -timeout=10 -print_final_stats=1 -artifact_prefix="$out/$t/")
  [[ -f "$dict" ]] && flags+=(-dict="$dict")
  local status=0
  # A hard stop well past -max_total_time, should libFuzzer itself hang.
  ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}" \
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    timeout --kill-after=30 "$((seconds + 300))" \
    "$build/tests/fuzz/$t" "${flags[@]}" "${extra_flags[@]}" "$corpus" >"$log" 2>&1 || status=$?
  local last execs cov ft corp crashes
  last="$(grep -E '^#[0-9]+.*cov: [0-9]+' "$log" | tail -n 1 || true)"
  execs="$(sed -nE 's/^stat::number_of_executed_units: ([0-9]+).*/\1/p' "$log" | tail -n 1)"
  [[ -n "$execs" ]] || execs="$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")"
  cov="$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")"
  ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
  corp="$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")"
  crashes="$(find "$out/$t" -maxdepth 1 -type f \
    \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)"
  echo "${execs:-?} ${cov:-?} ${ft:-?} ${corp:-?} $crashes $status" >"$work/$t.result"
}

echo "fuzzing ${targets[*]} for ${seconds} s each, ${parallel} at a time; logs in $out"
for t in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= parallel)); do wait -n || true; done
  run_target "$t" &
done
wait

failed=0
printf '\n%-14s %12s %7s %8s %7s %8s\n' target executions cov ft corpus crashes
for t in "${targets[@]}"; do
  read -r execs cov ft corp crashes status <"$work/$t.result"
  printf '%-14s %12s %7s %8s %7s %8s\n' "$t" "$execs" "$cov" "$ft" "$corp" "$crashes"
  if ((crashes > 0 || status != 0)); then
    failed=1
    echo "  $t: exit status $status; log $out/$t.log" >&2
    grep -m 3 -A 2 -E 'invariant failed|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error' \
      "$out/$t.log" | sed 's/^/    /' >&2 || true
    find "$out/$t" -maxdepth 1 -type f -printf '    input: %p\n' | head -n 5 >&2
  fi
done
exit "$failed"
