#!/usr/bin/env bash
# Rerunnable speed comparison with llama.cpp on the same driver and the same shapes.
#
# Builds llama.cpp's llama-bench (Vulkan on) from the llama.cpp that llama-cpp-python vendors in
# its PyPI source package (a pinned version, so the peer is the same for everyone), writes
# random-weight GGUF files of mamba-wgpu's presets with scripts/gen_preset_gguf.py, then runs, one
# after the other for each (preset, dtype):
#
#   llama-bench -m FILE -p PROMPT -n GEN -t THREADS -r REPS -o json  (Vulkan, all layers offloaded)
#   llama-bench ... -dev none                                        (with --cpu: CPU backend only)
#   cargo run --release --example bench -- --preset P --dtype D --prompt PROMPT --gen GEN --json
#
# and prints a markdown table of tokens per second (pp = prefill of PROMPT tokens, tg = decode of
# GEN tokens, batch 1) with the ratio mamba-wgpu / llama.cpp. Both sides see random weights of
# the same dimensions; llama-bench feeds random token ids, our bench a fixed pseudo-random prompt.
# Our bench times one run after a warm-up; llama-bench averages REPS runs after its own warm-up.
# With --rounds N the pair (llama.cpp, ours) runs N times in turn for each (preset, dtype) and
# the table gives each side's median and the median (and range) of the per-round ratios: on a
# machine shared with other work, single runs of either side can drift by a factor of two.
#
# Usage (from anywhere; paths are resolved from this file):
#
#   scripts/bench_peers.sh [--presets mamba-130m,mamba2-130m] [--dtypes f32,f16]
#                          [--prompt 512] [--gen 128] [--threads 2] [--reps 1] [--rounds 1]
#                          [--cpu] [--skip-build] [--no-deps] [--no-ours]
#
#   --skip-build  reuse $PEERS_DIR/build-vulkan/bin/llama-bench (fails if it is not there)
#   --no-deps     do not apt-get the build dependencies
#   --cpu         also time llama.cpp's CPU backend (same binary, `-dev none`)
#   --no-ours     only llama.cpp (e.g. to rerun the peer against an older table)
#
# Environment:
#
#   PEERS_DIR                 work folder: source, build, venv, GGUF files, logs, results.md
#                             (default /tmp/peers)
#   LLAMA_CPP_PYTHON_VERSION  llama-cpp-python release whose vendor/llama.cpp is built
#                             (default 0.3.36, which vendors ggml 0.25.3, commit 0c1e570)
#   PYTHON                    interpreter for the venv that writes the GGUF files (default python3;
#                             the `gguf` package wants 3.9+)
#   JOBS                      parallel compile jobs (default 2)
#   NICE                      niceness of the build and of the GGUF writer (default 10; the
#                             benches themselves run at normal priority)
#   GGML_VK_VISIBLE_DEVICES   Vulkan device index for llama.cpp (default 0). ggml-vulkan skips
#                             CPU-type devices such as lavapipe unless they are named here.
#   WGPU_BACKEND              wgpu backend for mamba-wgpu (default vulkan, the same driver)
#   CMAKE_EXTRA               extra arguments for llama.cpp's cmake configure
#
# Debian/Ubuntu build dependencies (installed with --no-deps left out, when missing): cmake, g++,
# libvulkan-dev (the loader and headers), glslc (the shaderc compiler ggml-vulkan compiles its
# shaders with; Debian 12 packages it as `glslc`), mesa-vulkan-drivers (lavapipe, for machines
# without a GPU). The build of llama-bench alone compiles ~1,000 shader variants and takes
# 20-40 minutes on 2 cores.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_DIR="${PEERS_DIR:-/tmp/peers}"
PIN="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-2}"
NICE="${NICE:-10}"
export GGML_VK_VISIBLE_DEVICES="${GGML_VK_VISIBLE_DEVICES:-0}"
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"

PRESETS="mamba-130m,mamba2-130m"
DTYPES="f32,f16"
PROMPT=512
GEN=128
THREADS=2
REPS=1
ROUNDS=1
CPU=0
SKIP_BUILD=0
DEPS=1
OURS=1

while [ $# -gt 0 ]; do
    case "$1" in
        --presets) PRESETS="$2"; shift 2 ;;
        --dtypes) DTYPES="$2"; shift 2 ;;
        --prompt) PROMPT="$2"; shift 2 ;;
        --gen) GEN="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --reps) REPS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --cpu) CPU=1; shift ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --no-deps) DEPS=0; shift ;;
        --no-ours) OURS=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

SRC="$PEERS_DIR/llama_cpp_python-$PIN/vendor/llama.cpp"
BUILD="$PEERS_DIR/build-vulkan"
LLAMA_BENCH="$BUILD/bin/llama-bench"
VENV="$PEERS_DIR/venv"
GGUF_DIR="$PEERS_DIR/gguf"
OUT="$PEERS_DIR/results"
mkdir -p "$PEERS_DIR" "$GGUF_DIR" "$OUT"
log() { echo "[bench_peers $(date +%H:%M:%S)] $*" >&2; }

# --- 1. build dependencies -------------------------------------------------------------------
if [ "$DEPS" = 1 ]; then
    missing=()
    command -v cmake >/dev/null || missing+=(cmake)
    command -v g++ >/dev/null || missing+=(g++)
    command -v glslc >/dev/null || missing+=(glslc)
    [ -e /usr/include/vulkan/vulkan.h ] || missing+=(libvulkan-dev)
    ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || missing+=(mesa-vulkan-drivers)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        SUDO=""
        [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
            "${missing[@]}"
    fi
fi

# --- 2. llama.cpp source, from the pinned PyPI sdist ----------------------------------------
if [ "$SKIP_BUILD" = 0 ] && [ ! -f "$SRC/CMakeLists.txt" ]; then
    log "downloading llama-cpp-python==$PIN (source)"
    # pip prepares the sdist's metadata (fetching its build backend); nothing is compiled here.
    "$PYTHON" -m pip download --no-binary :all: --no-deps "llama-cpp-python==$PIN" \
        -d "$PEERS_DIR/dl" >"$PEERS_DIR/pip-download.log" 2>&1
    tar -xzf "$PEERS_DIR/dl/llama_cpp_python-$PIN.tar.gz" -C "$PEERS_DIR"
fi

# Vulkan headers older than 1.3.272 (Debian 12 ships 1.3.239) lack VK_EXT_layer_settings, which
# ggml-vulkan only chains into vkCreateInstance to turn on the validation layer's best-practice
# checks (GGML_VK_VALIDATE builds). Without the headers that chain is dropped; nothing else in
# the source changes, and a benchmark run never loads the validation layer.
if [ "$SKIP_BUILD" = 0 ] && [ -z "${VULKAN_SDK:-}" ] &&
    ! grep -q VK_EXT_layer_settings /usr/include/vulkan/vulkan_core.h 2>/dev/null; then
    log "old Vulkan headers: dropping ggml-vulkan's VK_EXT_layer_settings chain"
    "$PYTHON" - "$SRC/ggml/src/ggml-vulkan/ggml-vulkan.cpp" <<'EOF'
import re, sys
p = sys.argv[1]
s = open(p).read()
s, n = re.subn(
    r"    std::vector<vk::LayerSettingEXT> settings = \{.*?\n"
    r"    vk::LayerSettingsCreateInfoEXT layer_setting_info\(settings\);\n"
    r"(    vk::InstanceCreateInfo instance_create_info\(.*?, extensions), &layer_setting_info\);\n",
    r"    (void) enable_best_practice;  // bench_peers.sh: headers without VK_EXT_layer_settings\n"
    r"\1);\n",
    s, flags=re.S)
open(p, "w").write(s)
print(f"patched {n} place(s) in {p}" if n else f"{p}: already patched or nothing to patch")
EOF
fi

# --- 3. build llama-bench with the Vulkan backend (the CPU backend comes with it) ----------
if [ "$SKIP_BUILD" = 0 ]; then
    log "configuring $SRC"
    # shellcheck disable=SC2086
    nice -n "$NICE" cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_VULKAN=ON \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF ${CMAKE_EXTRA:-} >"$PEERS_DIR/cmake-configure.log" 2>&1
    log "building llama-bench with -j$JOBS (log: $PEERS_DIR/cmake-build.log)"
    t0=$(date +%s)
    nice -n "$NICE" cmake --build "$BUILD" --target llama-bench -j "$JOBS" \
        >"$PEERS_DIR/cmake-build.log" 2>&1
    log "built in $(($(date +%s) - t0)) s"
fi
[ -x "$LLAMA_BENCH" ] || { echo "no $LLAMA_BENCH; run without --skip-build" >&2; exit 1; }

# --- 4. the GGUF files ----------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$ROOT/scripts/requirements-gguf.txt"
fi
IFS=, read -r -a presets <<<"$PRESETS"
IFS=, read -r -a dtypes <<<"$DTYPES"
for p in "${presets[@]}"; do
    for d in "${dtypes[@]}"; do
        f="$GGUF_DIR/$p-$d.gguf"
        if [ ! -s "$f" ]; then
            log "writing $f"
            nice -n "$NICE" "$VENV/bin/python" "$ROOT/scripts/gen_preset_gguf.py" \
                --preset "$p" --dtype "$d" --out "$f.tmp" >/dev/null
            mv "$f.tmp" "$f"
        fi
    done
done

# --- 5. the benches, one after the other (round after round) ---------------------------------
OURS_BIN="$ROOT/target/release/examples/bench"
if [ "$OURS" = 1 ]; then
    log "building mamba-wgpu's bench example"
    (cd "$ROOT" && cargo build --release --example bench -q)
fi
for p in "${presets[@]}"; do
    for d in "${dtypes[@]}"; do
      for r in $(seq 1 "$ROUNDS"); do
        f="$GGUF_DIR/$p-$d.gguf"
        tag="$p-$d-pp$PROMPT-tg$GEN-r$r"
        log "llama.cpp Vulkan: $p $d (round $r of $ROUNDS)"
        "$LLAMA_BENCH" -m "$f" -p "$PROMPT" -n "$GEN" -t "$THREADS" -r "$REPS" -o json \
            >"$OUT/llama-vulkan-$tag.json" 2>"$OUT/llama-vulkan-$tag.log" ||
            log "llama-bench (Vulkan) failed, see $OUT/llama-vulkan-$tag.log"
        if [ "$CPU" = 1 ]; then
            log "llama.cpp CPU: $p $d"
            "$LLAMA_BENCH" -m "$f" -p "$PROMPT" -n "$GEN" -t "$THREADS" -r "$REPS" -dev none \
                -o json >"$OUT/llama-cpu-$tag.json" 2>"$OUT/llama-cpu-$tag.log" ||
                log "llama-bench (CPU) failed, see $OUT/llama-cpu-$tag.log"
        fi
        if [ "$OURS" = 1 ]; then
            log "mamba-wgpu: $p $d"
            # The binary `cargo run --release --example bench` runs, called directly so that a
            # change in the tree during the run cannot trigger a rebuild between the benches.
            "$OURS_BIN" --preset "$p" --dtype "$d" --prompt "$PROMPT" --gen "$GEN" --json \
                >"$OUT/ours-$tag.txt" 2>"$OUT/ours-$tag.log" ||
                log "mamba-wgpu bench failed, see $OUT/ours-$tag.log"
        fi
      done
    done
done

# --- 6. the table ---------------------------------------------------------------------------
"$VENV/bin/python" - "$OUT" "$PROMPT" "$GEN" "$CPU" "$PRESETS" "$DTYPES" "$PIN" "$ROUNDS" <<'EOF' |
import json, statistics, sys
from pathlib import Path

out, prompt, gen, cpu, presets, dtypes, pin, rounds = sys.argv[1:]
out = Path(out)
rounds = int(rounds)

def llama(kind, tag):
    """(pp, tg, backend, device) from llama-bench's JSON, or None where it did not run."""
    try:
        rows = json.loads((out / f"llama-{kind}-{tag}.json").read_text())
    except (OSError, ValueError):
        return None
    pp = next((r["avg_ts"] for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0), None)
    tg = next((r["avg_ts"] for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0), None)
    r0 = rows[0] if rows else {}
    return pp, tg, r0.get("backends", "?"), r0.get("gpu_info", "?"), r0.get("build_commit", "?")

def ours(tag):
    try:
        last = (out / f"ours-{tag}.txt").read_text().strip().splitlines()[-1]
        j = json.loads(last)
    except (OSError, ValueError, IndexError):
        return None
    return j["pp_tokens_per_s"], j["tg_tokens_per_s"], j["adapter"]

def f(x):
    return "—" if x is None else (f"{x:.3g}" if x < 100 else f"{x:.0f}")

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def merged(runs):
    """Per-field medians over the rounds that ran (the first run's other fields)."""
    runs = [v for v in runs if v is not None]
    if not runs:
        return None
    return (med(v[0] for v in runs), med(v[1] for v in runs)) + tuple(runs[0][2:])

def pair(v):
    return "not run" if v is None else f"{f(v[0])} / {f(v[1])}"

def ratios(ours_runs, peer_runs):
    """Median of the per-round ratios (pp / tg), with their range when there are several."""
    rs = [(o[0] / v[0], o[1] / v[1]) for o, v in zip(ours_runs, peer_runs)
          if o is not None and v is not None and None not in (o[0], o[1], v[0], v[1])]
    if not rs:
        return "—"
    text = f"{med(r[0] for r in rs):.2f} / {med(r[1] for r in rs):.2f}"
    if len(rs) > 1:
        lo = [min(r[i] for r in rs) for i in (0, 1)]
        hi = [max(r[i] for r in rs) for i in (0, 1)]
        text += f" ({lo[0]:.2f}–{hi[0]:.2f} / {lo[1]:.2f}–{hi[1]:.2f})"
    return text

head = ["preset", "dtype", "llama.cpp Vulkan", "mamba-wgpu", "ratio ours / llama.cpp Vulkan"]
if cpu == "1":
    head.insert(3, "llama.cpp CPU")
if rounds > 1:
    print(f"tok/s, pp{prompt} / tg{gen}, batch 1, medians of {rounds} rounds "
          "(ratios: median of the rounds' ratios, their range in brackets):\n")
else:
    print(f"tok/s, pp{prompt} / tg{gen}, batch 1:\n")
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
info = set()
for p in presets.split(","):
    for d in dtypes.split(","):
        tags = [f"{p}-{d}-pp{prompt}-tg{gen}-r{r}" for r in range(1, rounds + 1)]
        vs, os_ = [llama("vulkan", t) for t in tags], [ours(t) for t in tags]
        v, o = merged(vs), merged(os_)
        row = [p, d, pair(v), pair(o), ratios(os_, vs)]
        if cpu == "1":
            row.insert(3, pair(merged([llama("cpu", t) for t in tags])))
        print("| " + " | ".join(row) + " |")
        if v:
            info.add(f"llama.cpp (llama-cpp-python {pin}, commit {v[4]}): "
                     f"backends {v[2]}, device {v[3]}")
        if o:
            info.add(f"mamba-wgpu adapter: {o[2]}")
print()
for line in sorted(info):
    print(line)
EOF
    tee "$OUT/results.md"
log "table saved to $OUT/results.md; raw outputs beside it"
