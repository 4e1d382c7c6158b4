#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz + libFuzzer): runs every target for SECONDS each.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]      # default: 30 s, every target
#
# Targets are what `cargo fuzz list` prints (one [[bin]] per target in fuzz/Cargo.toml), so a
# new target runs here and in CI as soon as it is added. Each target's committed seeds
# (fuzz/seeds/<t>) are read, and what libFuzzer finds goes to the working corpus
# (fuzz/corpus/<t>, not committed); a crash is written to fuzz/artifacts/<t>/ with the command
# that reproduces it. Prints one line per target and exits 1 when any target crashed (or
# leaked, ran out of memory, timed out, or did not build). Full output: fuzz/artifacts/logs/.
# Needs the nightly toolchain; installs cargo-fuzz (crates.io) only when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2
  exit 64
fi
shift $(( $# > 0 ? 1 : 0 ))

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is required (rustup toolchain install nightly)" >&2
  exit 69
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

# cargo fuzz has no --locked: check that the committed fuzz/Cargo.lock still fits, as CI's
# other cargo commands do.
if ! cargo metadata --locked --manifest-path fuzz/Cargo.toml --format-version 1 >/dev/null; then
  echo "fuzz: fuzz/Cargo.lock is out of date (a dependency of portcullis changed?):" \
    "run 'cargo metadata --manifest-path fuzz/Cargo.toml >/dev/null' and commit fuzz/Cargo.lock" >&2
  exit 1
fi

mapfile -t all < <(cargo +nightly fuzz list)
if [ $# -gt 0 ]; then
  targets=("$@")
  for t in "${targets[@]}"; do
    if ! printf '%s\n' "${all[@]}" | grep -qx -- "$t"; then
      echo "fuzz: unknown target '$t' (known: ${all[*]})" >&2
      exit 64
    fi
  done
else
  targets=("${all[@]}")
fi

# One build of every target first: a compile error is reported as such, not as a crash.
echo "fuzz: building ${targets[*]}"
build_start=$SECONDS
mkdir -p fuzz/artifacts/logs
for t in "${targets[@]}"; do
  if ! cargo +nightly fuzz build "$t" >fuzz/artifacts/logs/build.log 2>&1; then
    tail -60 fuzz/artifacts/logs/build.log >&2
    echo "fuzz: target $t does not build" >&2
    exit 1
  fi
done
echo "fuzz: built in $((SECONDS - build_start)) s; running each target for ${seconds} s"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
  log="fuzz/artifacts/logs/$t.log"
  status=0
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  # libFuzzer's final statistics (-print_final_stats=1); `#N DONE` when they are missing.
  execs=$(grep -aoE 'stat::number_of_executed_units: *[0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || true)
  if [ -z "$execs" ]; then
    execs=$(grep -aoE '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | grep -oE '[0-9]+' || true)
  fi
  rate=$(grep -aoE 'stat::average_exec_per_sec: *[0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || true)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  if [ "$status" = 0 ]; then
    verdict=ok
  else
    failed+=("$t")
    artifact=$(grep -aoE 'Test unit written to [^ ]+' "$log" | tail -1 | sed 's/Test unit written to //' || true)
    verdict="FAILED (exit $status${artifact:+, input $artifact}; log $log)"
  fi
  printf 'fuzz %-12s %12s execs  %8s exec/s  corpus %6s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$verdict"
done

if [ ${#failed[@]} -gt 0 ]; then
  for t in "${failed[@]}"; do
    echo "---- $t: end of fuzz/artifacts/logs/$t.log" >&2
    # The panic or sanitizer report and the reproduction commands, without the stack frames.
    sed -n '/panicked at\|==[0-9]*==ERROR\|ERROR: libFuzzer/,$p' "fuzz/artifacts/logs/$t.log" \
      | grep -avE '^ *([0-9]+: |at |#[0-9]+ )|^stat::|^Stack backtrace|^$' | head -30 >&2
  done
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
