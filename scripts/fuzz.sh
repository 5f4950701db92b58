#!/usr/bin/env bash
# Fuzzes the parsers with cargo-fuzz (libFuzzer), one target at a time, each for a given
# number of executions, under `nice`.
#
#   scripts/fuzz.sh [-n RUNS] [--keep-going] [--minimize | --minimize-only] [TARGET...]
#
#   -n RUNS          executions per target (default 1000000)
#   --keep-going     run in libFuzzer's fork mode with -ignore_crashes=1: a crash is recorded
#                    (fuzz/artifacts/TARGET/) and fuzzing goes on to the full count
#   --minimize       afterwards, reduce each working corpus to the fewest inputs covering
#                    every edge it reached (-set_cover_merge=1 -use_counters=0) and make that,
#                    without inputs over 16 KiB, the committed corpus fuzz/corpus/TARGET
#   --minimize-only  the same, without fuzzing
#   TARGET           config, safetensors, index, tokenizer, gguf, gguf_tokenizer (default: all)
#
# Needs nightly Rust and cargo-fuzz (`cargo install cargo-fuzz`). Each target's working corpus
# (fuzz/corpus-work/TARGET, not committed) starts from the committed corpus, the hand-made
# seeds in fuzz/seeds/TARGET, the inputs in fuzz/regressions/TARGET and the matching files
# under tests/fixtures. Logs go to fuzz/logs/TARGET.log, crashing inputs to
# fuzz/artifacts/TARGET/, and one line per target (executions, seconds, crashes) to
# fuzz/logs/summary.txt. `cargo test --test fuzz_corpus` replays the committed corpora,
# seeds and regressions without nightly.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
runs=1000000
minimize=0
fuzz=1
keep_going=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        -n) runs=$2; shift 2 ;;
        --minimize) minimize=1; shift ;;
        --minimize-only) minimize=1; fuzz=0; shift ;;
        --keep-going) keep_going=1; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

# Fixture files that seed each target.
seed_fixtures() {
    case "$1" in
        config) find tests/fixtures -name config.json ;;
        safetensors) find tests/fixtures -name '*.safetensors' ;;
        index) find tests/fixtures -name model.safetensors.index.json ;;
        gguf) find tests/fixtures -name '*.gguf' ;;
        *) ;;
    esac
}

mkdir -p fuzz/logs
# Build once, then run the binaries directly: `cargo fuzz run` would rebuild whenever the
# library's sources change mid-campaign.
nice -n 10 cargo +nightly fuzz build -O --fuzz-dir fuzz 2>&1 | tail -1
bin=$root/fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release

status=0
for t in "${targets[@]}"; do
    work=$root/fuzz/corpus-work/$t
    arts=$root/fuzz/artifacts/$t
    mkdir -p "$work" "$arts"
    for src in "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/regressions/$t"; do
        [ -d "$src" ] && find "$src" -type f -exec cp -n {} "$work"/ \;
    done
    seed_fixtures "$t" | while read -r f; do
        cp -n "$f" "$work/fixture-$(echo "$f" | tr / _)"
    done
    extra=()
    [ -f "fuzz/dicts/$t.dict" ] && extra+=(-dict="$root/fuzz/dicts/$t.dict")
    # Building a tokenizer costs milliseconds per input: keep its GGUF inputs small.
    [ "$t" = gguf_tokenizer ] && extra+=(-max_len=8192)
    [ "$keep_going" -eq 1 ] && extra+=(-fork=1 -ignore_crashes=1)
    if [ "$fuzz" -eq 1 ]; then
        before=$(find "$arts" -type f | wc -l)
        start=$(date +%s)
        echo "== $t: $runs executions (corpus: $(find "$work" -type f | wc -l) inputs)"
        # -malloc_limit_mb: no single allocation may exceed 512 MiB whatever the input claims;
        # -timeout: an input that takes 10 s is a hang.
        set +e
        nice -n 15 "$bin/$t" "$work" \
            -runs="$runs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
            -artifact_prefix="$arts/" -print_final_stats=1 "${extra[@]}" \
            >"fuzz/logs/$t.log" 2>&1
        rc=$?
        set -e
        secs=$(( $(date +%s) - start ))
        execs=$(grep -a 'stat::number_of_executed_units' "fuzz/logs/$t.log" | awk '{print $2}' | tail -1 || true)
        # Fork mode reports its total instead.
        [ -z "$execs" ] && execs=$(grep -a -o 'fuzzed for [0-9]* iterations' "fuzz/logs/$t.log" | awk '{print $3}' | tail -1 || true)
        crashes=$(( $(find "$arts" -type f | wc -l) - before ))
        line="$(date -u +%FT%TZ) $t runs=${execs:-?} seconds=$secs rc=$rc new_crashes=$crashes corpus=$(find "$work" -type f | wc -l)"
        echo "$line" | tee -a fuzz/logs/summary.txt
        if [ "$rc" -ne 0 ]; then
            status=1
            grep -a -m3 -E 'panicked|ERROR|SUMMARY' "fuzz/logs/$t.log" || true
        fi
    fi
    if [ "$minimize" -eq 1 ]; then
        # Like `cargo fuzz cmin` (-merge=1), but a set cover over edges alone (no hit-count
        # buckets): the fewest inputs that reach every edge the working corpus reached.
        min=$root/fuzz/corpus-work/$t.min
        rm -rf "$min" && mkdir -p "$min"
        nice -n 15 "$bin/$t" -set_cover_merge=1 -use_counters=0 -timeout=10 -rss_limit_mb=2048 \
            "$min" "$work" \
            >"fuzz/logs/$t.cmin.log" 2>&1
        rm -rf "fuzz/corpus/$t"
        mkdir -p "fuzz/corpus/$t"
        find "$min" -type f -size -16385c -exec cp {} "fuzz/corpus/$t"/ \;
        # Drop what the seeds and fixtures already hold (replayed from their own folders).
        for f in "fuzz/corpus/$t"/*; do
            for s in fuzz/seeds/"$t"/* fuzz/regressions/"$t"/* $(seed_fixtures "$t"); do
                [ -f "$s" ] && cmp -s "$f" "$s" && rm -f "$f" && break
            done
        done
        echo "   committed corpus: $(find "fuzz/corpus/$t" -type f | wc -l) inputs, $(du -sh "fuzz/corpus/$t" | cut -f1)"
    fi
done
exit $status
