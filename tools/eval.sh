#!/bin/sh
# tools/eval.sh BUILD — the long evaluations of `make eval` (minutes to hours; not part of CI).
#
# 1. Perplexity per bucket of positions (build/longheads-ppl) of tests/data/stories-long.txt
#    under the bundled model (trained at 512 tokens, though its file says 2048; models/README.md):
#    full attention against LongHeads, side by side, with the time of each run; buckets of
#    LH_EVAL_PPL_BUCKET tokens (default 512, so the first is inside the trained length).
# 2. The pass-key table of the LongHeads paper (`longheads passkey`), end to end through a
#    longheadsd started here on a temporary socket with a context of the longest length + 64:
#    for models/passkey-aligned.gguf and models/passkey-plain.gguf (tools/train/train_passkey.py,
#    trained at 256 tokens), LongHeads (--chunk 32 --window 256) and full attention at every
#    length, with the time per length; then the daemon's peak and current resident memory
#    (VmHWM / VmRSS from /proc) after the LongHeads table, and the KV-cache and
#    chunk-representation bytes per token computed from the model's shape (`longheads info`).
#    Without those files the table runs on the bundled stories260K, which cannot retrieve keys:
#    it exercises the mechanics only (and says so).
#
# Full attention costs grow with the square of the length (every query reads the whole prefix):
# past 16384 tokens it runs fewer trials (LH_EVAL_FULL_LONG_TRIALS), and lengths above
# LH_EVAL_FULL_MAX are skipped with an estimate from the longest length run.  The output says so.
# Measured on 2 idle cores with the passkey models: one full-attention trial at 32768 tokens takes
# about a minute, so about 17 minutes at 131072; LongHeads about 4 s and 16 s.  The whole
# evaluation of both models takes about an hour, mostly full attention at 131072.
#
# Environment (all optional):
#   LH_EVAL_LENGTHS          default 256,1024,4096,8192,16384,32768,131072
#   LH_EVAL_TRIALS           trials per length (default 20)
#   LH_EVAL_FULL_LONG_TRIALS full-attention trials per length past 16384 (default 1)
#   LH_EVAL_FULL_MAX         longest length run with full attention (default 131072)
#   LH_EVAL_SEED             seed of the keys and depths (default 1)
#   LH_EVAL_MODELS           the passkey models (default models/passkey-aligned.gguf
#                            models/passkey-plain.gguf, those that exist)
#   LH_EVAL_SKIP_PPL         set: skip part 1
#   LH_EVAL_PPL_BUCKET       positions per perplexity bucket (default 512)
#   LH_EVAL_THREADS          compute threads of the daemon and ppl (default: all cores)
#
# Every daemon started here is stopped by its PID (SIGTERM, then SIGKILL after 30 s), also on
# Ctrl-C and on errors.
set -u

B=${1:-build}
LENGTHS=${LH_EVAL_LENGTHS:-256,1024,4096,8192,16384,32768,131072}
TRIALS=${LH_EVAL_TRIALS:-20}
FULL_LONG_TRIALS=${LH_EVAL_FULL_LONG_TRIALS:-1}
FULL_MAX=${LH_EVAL_FULL_MAX:-131072}
SEED=${LH_EVAL_SEED:-1}
THREADS=${LH_EVAL_THREADS:-}
BUNDLED=models/stories260K.gguf
LH_CHUNK=32
LH_WINDOW=256

for bin in longheadsd longheads longheads-ppl; do
    if [ ! -x "$B/$bin" ]; then
        echo "eval: $B/$bin is missing; build first (make BUILD=$B)" >&2
        exit 1
    fi
done

tmp=$(mktemp -d /tmp/lh-eval-XXXXXX) || exit 1
sock=$tmp/lh.sock
daemon_pid=

stop_daemon() {
    [ -n "$daemon_pid" ] || return 0
    kill -TERM "$daemon_pid" 2>/dev/null
    i=0
    while kill -0 "$daemon_pid" 2>/dev/null && [ $i -lt 300 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if kill -0 "$daemon_pid" 2>/dev/null; then
        echo "eval: longheadsd (pid $daemon_pid) did not stop in 30 s; killing it" >&2
        kill -KILL "$daemon_pid" 2>/dev/null
    fi
    wait "$daemon_pid" 2>/dev/null
    daemon_pid=
}

# shellcheck disable=SC2317  # called by the trap
cleanup() {
    stop_daemon
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# start_daemon MODEL CTX: longheadsd on $sock, waits until it answers (up to 120 s).
start_daemon() {
    set -- --model "$1" --socket "$sock" --ctx "$2" --timeout 0 --log-file "$tmp/daemon.log"
    [ -n "$THREADS" ] && set -- "$@" --threads "$THREADS"
    "$B/longheadsd" "$@" &
    daemon_pid=$!
    i=0
    until "$B/longheads" --socket "$sock" health >/dev/null 2>&1; do
        if ! kill -0 "$daemon_pid" 2>/dev/null || [ $i -ge 1200 ]; then
            echo "eval: longheadsd did not start; its log:" >&2
            cat "$tmp/daemon.log" >&2
            stop_daemon
            return 1
        fi
        sleep 0.1
        i=$((i + 1))
    done
}

# passkey FILE ARGS...: `longheads passkey` on the daemon, its output on stdout as it comes and
# appended to FILE; a failure sets rc.
passkey() {
    out=$1
    shift
    { "$B/longheads" --socket "$sock" passkey --seed "$SEED" "$@"; echo $? >"$tmp/status"; } |
        tee -a "$out"
    [ "$(cat "$tmp/status")" = 0 ] || rc=3
}

now() { date +%s; }
t_all=$(now)
rc=0

# ---- 1. perplexity ------------------------------------------------------------------------------
if [ -z "${LH_EVAL_SKIP_PPL:-}" ]; then
    text=tests/data/stories-long.txt
    bucket=${LH_EVAL_PPL_BUCKET:-512}
    echo "== perplexity of $text under $BUNDLED (trained at 512 tokens), buckets of $bucket tokens"
    set -- "full" "" \
           "lh-w32-L512" "--attn longheads --chunk 32 --window 512" \
           "lh-w64-L256" "--attn longheads --chunk 64 --window 256"
    cols=""
    while [ $# -ge 2 ]; do
        name=$1 args=$2
        shift 2
        t0=$(now)
        # shellcheck disable=SC2086  # args is a list of options
        if ! "$B/longheads-ppl" -m "$BUNDLED" -f "$text" --bucket "$bucket" $args \
                ${THREADS:+--threads "$THREADS"} >"$tmp/ppl-$name" 2>"$tmp/ppl-$name.err"; then
            echo "eval: longheads-ppl $args failed:" >&2
            cat "$tmp/ppl-$name.err" >&2
            exit 1
        fi
        echo "  $name: $(tail -n 1 "$tmp/ppl-$name.err"), $(($(now) - t0)) s"
        cols="$cols $name"
    done
    # side by side: positions, then one ppl column per run
    printf '  %-14s' "tokens"
    for c in $cols; do printf ' %12s' "$c"; done
    printf '\n'
    awk -v dir="$tmp" -v names="$cols" '
        BEGIN {
            n = split(names, nm, " ")
            for (i = 1; i <= n; i++) {
                f = dir "/ppl-" nm[i]; r = 0
                while ((getline line < f) > 0) {
                    split(line, w, " ")
                    r++
                    if (w[1] == "overall") { key[r] = "overall"; val[i, r] = w[3] }
                    else { key[r] = w[2]; val[i, r] = w[4] }
                }
                if (r > rows) rows = r
            }
            for (r = 1; r <= rows; r++) {
                printf "  %-14s", key[r]
                for (i = 1; i <= n; i++) printf " %12s", val[i, r]
                printf "\n"
            }
        }'
    echo
fi

# ---- 2. passkey ---------------------------------------------------------------------------------
models=${LH_EVAL_MODELS:-}
if [ -z "$models" ]; then
    for m in models/passkey-aligned.gguf models/passkey-plain.gguf; do
        [ -f "$m" ] && models="$models $m"
    done
fi
if [ -z "$models" ]; then
    echo "== passkey: models/passkey-aligned.gguf and models/passkey-plain.gguf are not there;"
    echo "   running the table on $BUNDLED, which cannot retrieve keys: mechanics and timings only"
    echo "   (${LH_EVAL_TRIALS:-2} trials per length, full attention up to ${LH_EVAL_FULL_MAX:-32768}" \
         "tokens, unless LH_EVAL_TRIALS / LH_EVAL_FULL_MAX say otherwise)"
    models=$BUNDLED
    TRIALS=${LH_EVAL_TRIALS:-2}
    FULL_MAX=${LH_EVAL_FULL_MAX:-32768}
fi

max_len=0
short_lengths=""
long_lengths=""
skipped_lengths=""
for n in $(echo "$LENGTHS" | tr ',' ' '); do
    [ "$n" -gt "$max_len" ] && max_len=$n
    if [ "$n" -le 16384 ]; then
        short_lengths="$short_lengths${short_lengths:+,}$n"
    elif [ "$n" -le "$FULL_MAX" ]; then
        long_lengths="$long_lengths${long_lengths:+,}$n"
    else
        skipped_lengths="$skipped_lengths${skipped_lengths:+,}$n"
    fi
done
ctx=$((max_len + 64))

for model in $models; do
    [ -f "$model" ] || { echo "eval: $model: no such file" >&2; rc=1; continue; }
    echo "== passkey: $model, lengths $LENGTHS, seed $SEED (daemon context $ctx tokens)"
    start_daemon "$model" "$ctx" || exit 1
    "$B/longheads" --socket "$sock" info >"$tmp/info" || rc=3

    echo "-- LongHeads, chunk $LH_CHUNK, window $LH_WINDOW, $TRIALS trials per length"
    passkey /dev/null --lengths "$LENGTHS" --trials "$TRIALS" --attn longheads \
        --chunk "$LH_CHUNK" --window "$LH_WINDOW"

    # memory after the longest LongHeads prompt; bytes per token from the model's shape:
    # KV = 2 (K and V) x layers x kv heads x head dim x element size; the chunk representations
    # of LongHeads = layers x heads x head dim x 4 (F32) per chunk of $LH_CHUNK tokens
    awk -v pid="$daemon_pid" -v len="$max_len" -v w="$LH_CHUNK" '
        FILENAME ~ /status$/ {
            if ($1 == "VmHWM:") hwm = $2
            if ($1 == "VmRSS:") rss = $2
            next
        }
        # "layers: 4, embedding 128, heads 4 (kv 4), vocabulary 512"
        /^layers:/ { gsub(/[,()]/, ""); nl = $2; emb = $4; nh = $6; nkv = $8 }
        /^context:/ { kv = ($0 ~ /KV f16/) ? 2 : 4 }
        END {
            hd = emb / nh
            kvb = 2 * nl * nkv * hd * kv
            lhb = nl * nh * hd * 4 / w
            printf "memory: longheadsd (pid %d) after %d tokens: peak RSS %.1f MiB, now %.1f MiB;\n",
                   pid, len, hwm / 1024, rss / 1024
            printf "        per token: KV cache %d B + chunk representations %.1f B;" \
                   " at %d tokens %.1f MiB + %.1f MiB\n",
                   kvb, lhb, len, kvb * len / 1048576, lhb * len / 1048576
        }' "$tmp/info" "/proc/$daemon_pid/status"

    echo "-- full attention, $TRIALS trials per length up to 16384"
    : >"$tmp/full"
    if [ -n "$short_lengths" ]; then
        passkey "$tmp/full" --lengths "$short_lengths" --trials "$TRIALS" --attn full
    fi
    if [ -n "$long_lengths" ]; then
        echo "-- full attention past 16384 tokens: only $FULL_LONG_TRIALS trial(s) per length" \
             "(its cost grows with the square of the length)"
        passkey "$tmp/full" --lengths "$long_lengths" --trials "$FULL_LONG_TRIALS" --attn full
    fi
    if [ -n "$skipped_lengths" ]; then
        # the seconds per trial of the longest length run, scaled by the square of the ratio
        awk -v skip="$skipped_lengths" -v lt="$TRIALS" -v ll="$FULL_LONG_TRIALS" '
            /^length / { n = $2; sub(":", "", n); split($3, ct, "/")
                         for (i = 1; i <= NF; i++) if ($(i) == "s," || $(i) == "s") t = $(i - 1)
                         sub(";", "", t); if (n + 0 > best) { best = n + 0; per = t / ct[2] } }
            END {
                n = split(skip, s, ",")
                for (i = 1; i <= n; i++)
                    if (best > 0) {
                        est = per * (s[i] / best) ^ 2
                        printf "-- full attention at %d tokens NOT RUN: about %.0f %s per trial" \
                               " here (%.1f s per trial at %d, times (%d/%d)^2); set" \
                               " LH_EVAL_FULL_MAX=%d to run it\n", s[i],
                               est < 120 ? est : est / 60, est < 120 ? "s" : "min", per, best,
                               s[i], best, s[i]
                    } else
                        printf "-- full attention at %d tokens NOT RUN (LH_EVAL_FULL_MAX)\n", s[i]
            }' "$tmp/full"
    fi
    stop_daemon
    echo
done
echo "eval: done in $(($(now) - t_all)) s"
exit $rc
