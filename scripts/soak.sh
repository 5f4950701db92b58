#!/usr/bin/env bash
# The soak run: one session decodes many tokens on a fixture model, with memory sampled along
# the way and the cached state compared against fresh chunked prefills (see examples/soak.rs
# for what is checked and how). Not a CI test: a million tokens take a while.
#
#   scripts/soak.sh [TOKENS] [extra examples/soak.rs args, e.g. --model DIR --window 4096]
#
# Runs under `nice -n 15`; the log (a line per --every tokens, the JSON summary last) goes to
# stdout and to target/soak-<date>.log. Exits non-zero if a logit was not finite, the drift
# passed --max-drift or resident memory grew past --max-rss-growth-mib.
set -euo pipefail
cd "$(dirname "$0")/.."
tokens=${1:-1000000}
shift || true
nice -n 10 cargo build --release --example soak
log=target/soak-$(date -u +%Y%m%dT%H%M%SZ).log
nice -n 15 target/release/examples/soak --tokens "$tokens" "$@" 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
