#!/bin/sh
# tools/bench.sh — `make bench`: every benchmark side by side in one run, reported as ratios.
#
#   sh tools/bench.sh [BUILD]        (BUILD defaults to build; the binaries must be built)
#
# 1. longheads-kbench   kernels: oneDNN vs GEMV vs scalar matmuls, dense attention per token;
# 2. longheads-lhbench  the LongHeads attention kernel against dense attention, 1x .. 128x L;
# 3. longheads-bench    the model-level table: prefill and decode per token at 1x, 8x, 32x and
#                       128x the window, LongHeads against full attention, and the memory;
# 4. llama.cpp          longheads-bench in its llama-bench-like mode on the shapes of the
#                       reference figures, as a ratio to them.
# The benchmark models (random weights, made by longheads-mkmodel) are kept in BUILD/bench and
# only made when absent; "small" (stories110M's shape) takes a minute or so the first time.
# Threads: OpenMP's defaults (all cores); OMP_NUM_THREADS and OMP_WAIT_POLICY are honoured.
# Takes about 5-8 minutes on two idle cores (the first run also makes the models, ~2 min);
# on a busy machine much longer: see the warning it prints.
set -eu

B=${1:-build}
D=$B/bench
mkdir -p "$D"

# Reference figures, llama.cpp tokens/s (median; fa off, llama-bench's default), from
# shared/reference/llamacpp_baseline.md: llama.cpp upstream commit 16cc3c606efe (ggml 0.9.4),
# `llama-bench -t 2`, CPU-only build (GGML_NATIVE, OpenMP, gcc 12.2), measured 2026-11-25 on
# this machine kind (2 cores, AMD EPYC Zen 4, AVX-512).  Random-weight models of the same shapes
# as ours.  Repeated runs there differed by up to ~30%: orientation, not a contest to the percent.
REF_TINY_F32="pp512 5660
pp4096 1309
tg64 7129
tg64@4096 900"
REF_SMALL_F32="pp512 696
tg64 61.5"
REF_SMALL_Q8_0="pp512 885
tg64 177"

# mk FILE ARGS...: make a benchmark model unless it is there (written aside, then renamed, so an
# interrupted run leaves no half file behind).
mk() {
    f=$D/$1
    shift
    if [ ! -f "$f" ]; then
        echo "bench: making $f (random weights)"
        "$B/longheads-mkmodel" -o "$f.part" "$@" 2>/dev/null
        mv "$f.part" "$f"
    fi
}

section() {
    printf '\n==== %s ====\n' "$1"
}

# compare LABEL REFS MODEL BENCH-ARGS...: our tokens/s next to the reference, with the ratio.
compare() {
    label=$1 refs=$2 model=$3
    shift 3
    ours=$("$B/longheads-bench" -m "$model" "$@" | grep -v '^#') || ours=""
    printf '%s\n' "$refs" | while read -r test ref; do
        mine=$(printf '%s\n' "$ours" | awk -v t="$test" '$1 == t { print $2 }')
        printf '%s\n' "$mine" | awk -v l="$label" -v t="$test" -v r="$ref" '
            { if ($1 + 0 > 0) printf "%-11s %-10s %12.1f %12.1f %9.2fx\n", l, t, $1, r, $1 / r;
              else printf "%-11s %-10s %12s %12.1f %10s\n", l, t, "failed", r, "-" }'
    done
}

start=$(date +%s)
ncpu=$(nproc 2>/dev/null || echo 1)
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
echo "longheads bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $ncpu cores, load average $load," \
     "OMP_NUM_THREADS=${OMP_NUM_THREADS:-default} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-default}"
if awk -v l="$load" -v n="$ncpu" 'BEGIN { exit !(l > n / 2) }'; then
    echo "bench: WARNING: other processes are using the cores (load $load on $ncpu): every figure"
    echo "       below is inflated, and spin-waiting OpenMP threads (the default) make the"
    echo "       multi-threaded ones far worse; only ratios measured in one run mean anything"
fi

# The model-level table's model: 31.6M parameters, head_dim 64, weights (126 MB) well past the
# 32 MiB L3 cache, so that a short context is not flattered by a cache-resident model.
mk lh-d512-f32.gguf --dim 512 --heads 8 --kv-heads 4 --layers 8 --ff 1376 --vocab 8192
mk tiny-f32.gguf --shape tiny
mk small-f32.gguf --shape small
mk small-q8_0.gguf --shape small --type q8_0

section "kernels (longheads-kbench)"
"$B/longheads-kbench"

section "LongHeads attention kernel against dense (longheads-lhbench)"
"$B/longheads-lhbench"

section "model: LongHeads against full attention (longheads-bench)"
"$B/longheads-bench" -m "$D/lh-d512-f32.gguf" --window 512 --chunk 64

section "against llama.cpp (reference figures, same shapes; ratio > 1: longheads is faster)"
echo "full attention, tokens/s; best of 3 here, median of llama-bench's runs there"
printf '%-11s %-10s %12s %12s %10s\n' model test longheads llama.cpp ratio
compare "tiny F32" "$REF_TINY_F32" "$D/tiny-f32.gguf" --pp 512,4096 --tg 64 --depth 0,4096
compare "small F32" "$REF_SMALL_F32" "$D/small-f32.gguf" --pp 512 --tg 64
compare "small Q8_0" "$REF_SMALL_Q8_0" "$D/small-q8_0.gguf" --pp 512 --tg 64

echo
echo "bench: done in $(( $(date +%s) - start )) s"
