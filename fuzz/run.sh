#!/usr/bin/env bash
# fuzz/run.sh SECONDS [TARGET...]: runs the real fuzzer (libFuzzer, under a
# nightly toolchain) for SECONDS per target, one target after another, and
# prints executions per second, corpus size and crashes for each.
#
# Builds fuzz/ as cargo-fuzz would (`cargo fuzz build`: sanitizer coverage,
# --cfg fuzzing, debug assertions, AddressSanitizer; FUZZ_SANITIZER=none
# leaves ASan out) into target/fuzz/, so cargo-fuzz itself is not needed.
# Each target starts from fuzz/corpus/<target>/ and fuzz/regressions/<target>/;
# what it finds goes to target/fuzz/corpus/<target>/ (not committed: copy
# the few inputs worth keeping, minimized, into fuzz/corpus/), crashes to
# fuzz/artifacts/<target>/. Memory is capped at 2 GiB (-rss_limit_mb,
# -malloc_limit_mb), so an unbounded allocation is reported, not swapped.
# Without a nightly toolchain it says so and exits 0: stable CI replays the
# corpus instead (tests/fuzz_corpus.rs). Extra libFuzzer flags: FUZZ_ARGS.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')
fi

if ! command -v rustup >/dev/null 2>&1 || ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: no nightly toolchain (rustup toolchain install nightly); not fuzzing." >&2
  echo "fuzz/run.sh: the stable tests replay fuzz/corpus: cargo test --test fuzz_corpus" >&2
  exit 0
fi

triple=$(rustup run nightly rustc -vV | sed -n 's/^host: //p')
flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  --cfg fuzzing
  -Cdebug-assertions
  -Coverflow-checks
  -Cforce-frame-pointers
)
if [ "${FUZZ_SANITIZER:-address}" = address ]; then
  flags+=(-Zsanitizer=address)
fi
target_dir=../target/fuzz
# --target keeps build scripts and proc macros uninstrumented.
RUSTFLAGS="${flags[*]}" cargo +nightly build --release --locked --target "$triple" \
  --target-dir "$target_dir" $(printf -- '--bin %s ' "${targets[@]}")

summary=()
failed=0
for t in "${targets[@]}"; do
  work="$target_dir/corpus/$t"
  mkdir -p "$work" "artifacts/$t"
  seeds=("corpus/$t")
  [ -d "regressions/$t" ] && seeds+=("regressions/$t")
  log="$target_dir/$t.log"
  echo "fuzz/run.sh: $t for ${seconds}s" >&2
  set +e
  # shellcheck disable=SC2086
  "$target_dir/$triple/release/$t" -max_total_time="$seconds" -timeout=25 \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" ${FUZZ_ARGS:-} "$work" "${seeds[@]}" 2>"$log"
  rc=$?
  set -e
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  execs=$(stat number_of_executed_units)
  rate=$(stat average_exec_per_sec)
  rss=$(stat peak_rss_mb)
  units=$(find "$work" -type f | wc -l)
  crashes=$(find "artifacts/$t" -type f | wc -l)
  if [ "$rc" -ne 0 ]; then
    failed=1
    grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY|artifact_prefix|Test unit written)' "$log" | head -8 >&2 || true
  fi
  summary+=("$(printf '%-10s %5ss %10s execs %7s exec/s %6s corpus %5s MiB rss %3s crash files  exit %s' \
    "$t" "$seconds" "${execs:-?}" "${rate:-?}" "$units" "${rss:-?}" "$crashes" "$rc")")
done
printf '%s\n' "${summary[@]}"
exit "$failed"
