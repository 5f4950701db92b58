#!/usr/bin/env bash
# Runs the pure-Rust code's tests under Miri (undefined behaviour, out-of-bounds and
# arithmetic-overflow checks): the unit tests inside src/ (config and safetensors/index
# parsing, sampling settings, cancellation tokens), the CPU references checked against each
# other (tests/reference_cpu.rs), and a sample of the fuzz corpora replayed through the
# parsers (tests/fuzz_corpus.rs; the smallest inputs of each target under Miri). None of these
# touches wgpu; a unit test that needs the GPU must carry `#[cfg_attr(miri, ignore)]`.
#
#   scripts/miri.sh [extra cargo test args, e.g. a test name filter]
#
# Needs nightly with the miri component (`rustup +nightly component add miri`). Files are
# read through std (never memory-mapped) on these paths, so isolation is relaxed only to let
# the tests read the committed fixtures and corpora.
set -euo pipefail
cd "$(dirname "$0")/.."
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
start=$(date +%s)
nice -n 10 cargo +nightly miri test --lib "$@"
nice -n 10 cargo +nightly miri test --test reference_cpu --test fuzz_corpus "$@"
echo "miri: done in $(( $(date +%s) - start )) s"
