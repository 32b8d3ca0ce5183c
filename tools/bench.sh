#!/bin/sh
# tools/bench.sh — `make bench`: longheads and llama.cpp side by side, same files, same run.
#
#   sh tools/bench.sh [BUILD]        (BUILD defaults to build; the binaries must be built)
#
# Environment:
#   LLAMA_BENCH=/path/to/llama-bench   run llama.cpp on the same GGUF files, alternating with
#                                      ours, and print both and the ratio.  Unset: our figures
#                                      alone (said so).  Build it outside this repository from its
#                                      public source (DEVELOPERS.md, "Checking against the real
#                                      thing").
#   BENCH_MODELS="small:f32 ..."       SHAPE:TYPE list for the pp512/tg64 table (shapes small =
#                                      stories110M, 1b = TinyLlama-1.1B, tiny = stories260K;
#                                      types f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k); default:
#                                      the eight small files and 1b in f32 f16 bf16 q8_0 q4_k.
#   BENCH_DEPTH=16384                  context depth of the "at depth" section (0: skip it).
#   BENCH_REPS=3                       repetitions: a run of each engine per repetition (its
#                                      warm-up and one measured run), in ABBA order; the table
#                                      gives the mean of the runs' rates (as llama-bench's
#                                      avg_ts); unset: 3, and 2 for the 1b files.
#   BENCH_SECTIONS="side depth daemon lh"  add "kernels" (longheads-kbench); "lh" is LongHeads
#                                      against full attention, 1x..128x the window (the per-token
#                                      cost at 128x against 1x), and the LongHeads kernel.
#
# Sections:
#   side    pp512 and tg64 per model file, ours beside llama-bench's (`-p 512 -n 64 -t T`), and a
#           roofline line per file: the bytes one decoded token reads from the weights divided by
#           the read bandwidth measured by longheads-bwprobe just before and just after that
#           file's runs (the higher of the two), and each engine's share of it; beside it ours
#           measured interleaved (longheads-bench --roofline: decode steps alternating with read
#           passes over the same bytes, so that both see the same bandwidth).
#   depth   tg64 and pp512 after a context of BENCH_DEPTH tokens (llama-bench -d), full attention
#           and LongHeads (w=64 L=512), stories110M and stories260K shapes.
#   daemon  through the socket: longheadsd started on a model, longheads-dbench sends requests
#           (512 random prompt tokens, 64 generated): time to first token, prefill and decode
#           tokens/s from the Final frame, beside the engine-level figures of the same file.
#   lh      ours alone: longheads-bench on a dim-512 8-layer random model (w=64, L=512), prefill
#           and decode per token at 1x, 8x, 32x and 128x the window, LongHeads beside full
#           attention, and its goal line (the cost at 128x against 1x measured beside it); then
#           longheads-lhbench (the LongHeads attention kernel against dense).
#
# Ours runs as the daemon runs: its thread count (all cores) and its OpenMP wait policy (the
# daemon is started with GOMP_SPINCOUNT=10000 by its unit and `make run`, see
# daemon/main.c; our engine-level runs here get the same, llama-bench does not).  llama-bench gets
# the same thread count (-t).  The benchmark models have random
# weights (longheads-mkmodel), are made under BUILD/bench when absent (never committed; the 1b
# files are 1.2-4.4 GB) and kept.  With the defaults this should take about 10-15 minutes on two
# idle cores (not yet timed idle; plus a few minutes to make the models the first time: trim with
# BENCH_MODELS / BENCH_DEPTH); on a busy machine much longer (35 minutes for six files and depth
# 4096 at a load of ~8), and every figure is noisy: only ratios taken in one run mean anything.
set -eu

B=${1:-build}
D=$B/bench
mkdir -p "$D"
REPS=${BENCH_REPS:-3}
MODELS=${BENCH_MODELS:-"small:f32 small:f16 small:bf16 small:q8_0 small:q4_0 small:q4_k small:q5_k small:q6_k 1b:f32 1b:f16 1b:bf16 1b:q8_0 1b:q4_k"}
DEPTH=${BENCH_DEPTH:-16384}
SECTIONS=${BENCH_SECTIONS:-"side depth daemon lh"}
LB=${LLAMA_BENCH:-}
NT=$(nproc 2>/dev/null || echo 1)
[ -n "${OMP_NUM_THREADS:-}" ] && NT=$OMP_NUM_THREADS

# the daemon's wait policy for our runs (daemon/main.c LH_DAEMON_SPINCOUNT)
OURS_ENV=""
if [ -z "${OMP_WAIT_POLICY:-}" ] && [ -z "${GOMP_SPINCOUNT:-}" ]; then
    OURS_ENV="GOMP_SPINCOUNT=10000"
fi

has() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }
section() { printf '\n==== %s ====\n' "$1"; }

# model SHAPE TYPE: the file's path, made (written aside, then renamed) when absent.
model() {
    f=$D/$1-$2.gguf
    if [ ! -f "$f" ]; then
        echo "bench: making $f (random weights)" >&2
        "$B/longheads-mkmodel" -o "$f.part" --shape "$1" --type "$2" 2>/dev/null
        mv "$f.part" "$f"
    fi
    echo "$f"
}

# ours FILE ARGS...: longheads-bench's "name value" lines (comments dropped).
ours() {
    f=$1
    shift
    env $OURS_ENV "$B/longheads-bench" -m "$f" "$@" 2>&1 | grep -v '^#' || true
}

# llama FILE ARGS...: llama-bench's tests as "name value" lines like ours (pp512, tg64@16384),
# value = its mean tokens/s; nothing when LLAMA_BENCH is unset or it fails.
llama() {
    [ -n "$LB" ] || return 0
    f=$1
    shift
    # llama.cpp with its own OpenMP defaults (the daemon's GOMP_SPINCOUNT is ours, not its)
    env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY "$LB" -m "$f" -t "$NT" -o csv "$@" 2>/dev/null | awk -F, '
        NR == 1 { for (i = 1; i <= NF; i++) { gsub(/"/, "", $i); col[$i] = i } next }
        { for (i = 1; i <= NF; i++) gsub(/"/, "", $i)
          p = $col["n_prompt"]; g = $col["n_gen"]; d = $col["n_depth"]
          name = p > 0 ? "pp" p : "tg" g
          if (d > 0) name = name "@" d
          printf "%s %s\n", name, $col["avg_ts"]
          if (!fa_done) { printf "fa %s\n", $col["flash_attn"]; fa_done = 1 } }' || true
}

val() { printf '%s\n' "$1" | awk -v k="$2" '$1 == k { print $2; exit }'; }
# mean LINES KEY: the mean of KEY's values over several runs' lines (nothing when there are none)
mean() { printf '%s\n' "$1" | awk -v k="$2" '$1 == k { s += $2; n++ } END { if (n) print s / n }'; }

# row LABEL TEST OURS LLAMA: one line of a side-by-side table.
row() {
    awk -v l="$1" -v t="$2" -v a="${3:-}" -v b="${4:-}" 'BEGIN {
        sa = a == "" ? "failed" : sprintf("%.1f", a)
        sb = b == "" ? "-" : sprintf("%.1f", b)
        r = (a != "" && b != "" && b > 0) ? sprintf("%.2fx", a / b) : "-"
        printf "%-14s %-14s %11s %11s %8s\n", l, t, sa, sb, r }'
}

start=$(date +%s)
load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)
echo "longheads bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $NT threads, load average $load," \
     "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset} GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-unset}," \
     "ours with ${OURS_ENV:-the caller's policy} (the daemon's)"
if awk -v l="$load" -v n="$(nproc 2>/dev/null || echo 1)" 'BEGIN { exit !(l > n / 2) }'; then
    echo "bench: WARNING: other processes are using the cores (load $load): every figure below is"
    echo "       noisy and slowed; only ratios measured in one run mean anything"
fi
if [ -n "$LB" ]; then
    if [ ! -x "$LB" ]; then
        echo "bench: LLAMA_BENCH=$LB is not an executable" >&2
        exit 1
    fi
    echo "llama.cpp: $LB (llama-bench -t $NT, its defaults otherwise, its OpenMP wait policy unset; 'llama' = its mean tokens/s)"
else
    echo "llama.cpp: LLAMA_BENCH is not set: longheads' figures alone, no ratios" \
         "(set LLAMA_BENCH=/path/to/llama-bench to run both side by side)"
fi
# The host's bandwidth moves from minute to minute (22-66 GB/s seen in one day): probed here, after
# each file of the side-by-side section (the roofline takes the probes around a file's runs) and
# after the section
BW=$("$B/longheads-bwprobe" | awk '{ print $2 }')
echo "read bandwidth (longheads-bwprobe, $NT threads, read-only, best of 7): $BW GB/s"

if has side; then
    section "pp512 / tg64, full attention, tokens/s (ratio > 1: longheads is faster)"
    echo "ours: longheads-bench --pp 512 --tg 64 --reps 1, llama-bench -p 512 -n 64 -r 1, each run $REPS times (2 for 1b files unless BENCH_REPS is set) in ABBA order; the mean of the runs' rates (as llama-bench's avg_ts); kv f16, batch 512, weights auto (the daemon's defaults)"
    printf '%-14s %-14s %11s %11s %8s\n' model test longheads llama ratio
    i=0
    roof=""
    # a probe between files: the one before a file's runs and the one after them bound what the
    # memory gave while they ran (it moves 2x within minutes on a shared host)
    pb=$BW
    for m in $MODELS; do
        shape=${m%%:*} type=${m#*:}
        f=$(model "$shape" "$type")
        r=$REPS
        # the 1b files take ~10 s a repetition: 2 unless BENCH_REPS says otherwise
        [ "$shape" = 1b ] && [ -z "${BENCH_REPS:-}" ] && r=2
        # one run of each engine per repetition (each its warm-up and one measured run), in
        # ABBA order (which engine starts alternates between repetitions and between files): the
        # machine's bandwidth drifts by a third within a file's runs, and a drift that is linear
        # over them then falls on both engines alike.  (Before: all of one engine's repetitions,
        # then the other's: 1b f32 tg64 read 0.90x in a run whose probes rose from 38.6 to 62.2
        # GB/s across that file, where alternating builds measured ours faster.)  Our roofline
        # steps run once, in the first repetition.
        o="" oa="" la=""
        for k in $(seq 1 "$r"); do
            rf=""
            [ "$k" = 1 ] && rf="--roofline 32"
            if [ $(((i + k) % 2)) = 1 ]; then
                ok=$(ours "$f" --pp 512 --tg 64 --reps 1 --stat mean $rf)
                lk=$(llama "$f" -p 512 -n 64 -r 1)
            else
                lk=$(llama "$f" -p 512 -n 64 -r 1)
                ok=$(ours "$f" --pp 512 --tg 64 --reps 1 --stat mean $rf)
            fi
            [ "$k" = 1 ] && o=$ok
            oa="$oa$ok
"
            la="$la$lk
"
        done
        i=$((i + 1))
        for t in pp512 tg64; do
            row "$shape $type" "$t" "$(mean "$oa" "$t")" "$(mean "$la" "$t")"
        done
        pa=$("$B/longheads-bwprobe" | awk '{ print $2 }')
        # name, weight bytes per token, our tg64, llama's (- when absent), the probes around them
        roof="$roof$shape $type|$(val "$o" weight_bytes_per_token)|$(mean "$oa" tg64)|$(mean "$la" tg64)|$pb|$pa|$(val "$o" roofline_read_gbs)|$(val "$o" roofline_share)
"
        pb=$pa
        fa=$(val "$la" fa)
        [ "$m" = 1b:f16 ] && f16_tg=$(mean "$oa" tg64) && f16_r=$r
    done
    [ -n "$LB" ] && echo "(llama-bench flash_attn: ${fa:-?})"
    # our default reads the weights into memory (--weights auto); llama-bench maps them unless
    # told --mmap 0: the same file that way too, beside our figure from the table
    if [ -n "$LB" ] && [ -n "${f16_tg:-}" ]; then
        l=$(llama "$(model 1b f16)" -p 0 -n 64 -r "$f16_r" -mmp 0)
        row "1b f16" "tg64 llama -mmp 0" "$f16_tg" "$(val "$l" tg64)"
    fi
    BW2=$("$B/longheads-bwprobe" | awk '{ print $2 }')
    echo "read bandwidth again after this section: $BW2 GB/s"
    echo
    echo "roofline: decode reads every weight once per token; limit = bandwidth / bytes per token, the"
    echo "bandwidth the higher of the probes just before and just after that file's runs (GB/s)."
    echo "interleaved: 32 of our decode steps, each followed by a read pass over the same bytes where"
    echo "the model holds them, same threads (longheads-bench --roofline): the pass's GB/s and the"
    echo "decode's share of its speed, both measured within the same seconds"
    printf '%-14s %13s %12s %15s %9s %9s %17s\n' model "bytes/token" "probes" "limit" longheads llama "interleaved"
    printf '%s' "$roof" | awk -F'|' '$2 > 0 {
        bw = $6 > $5 ? $6 : $5
        r = bw * 1e9 / $2
        printf "%-14s %10.1f MB %5.1f %5.1f %9.1f tok/s %9s %9s %17s\n", $1, $2 / 1e6, $5, $6, r,
               $3 != "" ? sprintf("%.0f%%", 100 * $3 / r) : "-",
               $4 != "" ? sprintf("%.0f%%", 100 * $4 / r) : "-",
               $8 != "" ? sprintf("%.0f%% of %.1f", 100 * $8, $7) : "-" }'
fi

if has depth && [ "$DEPTH" -gt 0 ]; then
    section "at depth $DEPTH: decode (tg64) and a 512-token prefill after a context of $DEPTH tokens"
    echo "ours: fill$DEPTH = our prefill of the first $DEPTH tokens (one run; llama-bench skips that"
    echo "computation by default, so it has no counterpart); LongHeads: w=64 L=512"
    printf '%-14s %-14s %11s %11s %8s\n' model test longheads llama ratio
    for m in small:f32 tiny:f32; do
        shape=${m%%:*} type=${m#*:}
        f=$(model "$shape" "$type")
        l=$(llama "$f" -p 512 -n 64 -d "$DEPTH" -r 1)
        for a in full longheads; do
            o=$(ours "$f" --pp 512 --tg 64 --depth "$DEPTH" --reps 1 --attn "$a" --chunk 64 --window 512)
            row "$shape $type" "fill$DEPTH $a" "$(val "$o" "fill$DEPTH")" ""
            for t in "pp512@$DEPTH" "tg64@$DEPTH"; do
                row "$shape $type" "$t $a" "$(val "$o" "$t")" "$(val "$l" "$t")"
            done
        done
    done
fi

if has daemon; then
    section "through the daemon's socket (longheads-dbench: 512 random prompt tokens, 64 generated)"
    printf '%-14s %10s %12s %12s   %s\n' model "ttft ms" "prefill t/s" "decode t/s" "(engine: pp512 / tg64 above)"
    for m in small:f32 1b:q8_0; do
        case " $MODELS " in *" $m "*) ;; *) continue ;; esac
        shape=${m%%:*} type=${m#*:}
        f=$(model "$shape" "$type")
        sock=$D/dbench.sock
        rm -f "$sock"
        "$B/longheadsd" --model "$f" --socket "$sock" --ctx 4096 --quiet 2>"$D/dbench-daemon.log" &
        dpid=$!
        n=0
        while [ ! -S "$sock" ] && [ $n -lt 600 ] && kill -0 "$dpid" 2>/dev/null; do
            sleep 0.1
            n=$((n + 1))
        done
        o=$("$B/longheads-dbench" --socket "$sock" --prompt 512 --gen 64 --reps "$REPS" 2>&1 || true)
        kill "$dpid" 2>/dev/null || true
        wait "$dpid" 2>/dev/null || true
        awk -v n="$shape $type" -v a="$(val "$o" ttft_ms)" -v b="$(val "$o" prefill_tps)" \
            -v c="$(val "$o" decode_tps)" 'BEGIN { printf "%-14s %10s %12s %12s\n", n,
            a == "" ? "failed" : a, b == "" ? "-" : b, c == "" ? "-" : c }'
    done
fi

if has lh; then
    section "LongHeads against full attention, per token, 1x .. 128x the window (longheads-bench)"
    mkd=$D/lh-d512-f32.gguf
    if [ ! -f "$mkd" ]; then
        "$B/longheads-mkmodel" -o "$mkd.part" --dim 512 --heads 8 --kv-heads 4 --layers 8 \
            --ff 1376 --vocab 8192 2>/dev/null
        mv "$mkd.part" "$mkd"
    fi
    "$B/longheads-bench" -m "$mkd" --window 512 --chunk 64
    section "LongHeads attention kernel against dense (longheads-lhbench)"
    "$B/longheads-lhbench"
fi

if has kernels; then
    section "kernels (longheads-kbench)"
    "$B/longheads-kbench"
fi

echo
echo "bench: done in $(( $(date +%s) - start )) s"
