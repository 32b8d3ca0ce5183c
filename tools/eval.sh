#!/bin/sh
# tools/eval.sh BUILD — `make eval`: the evaluation tables of README.md, written to a results file
# (results/eval.md) with the exact commands, the date, the machine and the git commit.  The README
# quotes that file's tables verbatim and tests/evaltables.sh (in `make test`) checks that they are
# equal, so rerun `make eval` and copy its tables into the README whenever a figure changes.
#
# 1. Perplexity per bucket of positions (longheads-ppl) of tests/data/stories-long.txt (17,697
#    tokens) under the bundled stories260K (trained at 512 tokens): full attention, LongHeads at
#    the tool's defaults (the file's longheads.* keys: chunk 64, window 512), two other
#    LongHeads settings, the defaults with the bound chunk score (--score bound), and both scores
#    keeping the last LH_EVAL_RECENT chunks (--recent 4) instead of the paper's 2, one column each.
# 2. The pass-key table of the LongHeads paper (`longheads passkey`), end to end through a
#    longheadsd started here on a temporary socket: for models/passkey-aligned.gguf and
#    models/passkey-plain.gguf (models/PASSKEY.md, trained at 256 tokens), LongHeads at the
#    daemon's defaults (the files' keys: chunk 32, window 256), the same with the bound chunk
#    score (--score bound, up to LH_EVAL_BOUND_MAX), both scores keeping the last LH_EVAL_RECENT
#    chunks (--recent 4: rep up to LH_EVAL_BOUND_MAX, the bound at every length) and full
#    attention; one passkey run per length (keys and depths depend only on the seed and the
#    length, so the first trials
#    of every cell are the same prompts in both attentions and in the long version).
# 3. The daemon's peak resident memory (VmHWM) after the longest LongHeads prompt, and the
#    KV-cache and chunk-representation bytes per token computed from the model's shape.
#
# Every figure is deterministic (greedy decoding, fixed seed, the same sums whatever the thread
# count), so the tables do not depend on the machine or its load; only wall times do, and the
# results file gives just the total.  Every run uses LH_EVAL_THREADS threads (default 1): on a
# busy machine two OpenMP threads on two shared cores are many times slower than one (barriers
# wait for a descheduled thread), and one thread makes the duration predictable.
#
# Defaults (about 11 minutes with one thread on the 2-core development machine while other jobs
# kept its load average at 2-6; allow 20 on a busier one): LongHeads 20 trials per length at 256..32768 and 5 at 131072;
# full attention 20 trials up to 8192, 3 at 16384, 1 at 32768 and none at 131072 (its cost grows
# with the square of the length: one trial there takes about 20 minutes, 16x the one at 32768).
# EVAL_FULL=1 (`make eval EVAL_FULL=1`): the long version, written to results/eval-full.md:
# the same, plus 20 LongHeads trials at 131072 and one full-attention trial there (about an
# hour, most of it the two full-attention trials at 131072).
#
# Environment (all optional; each overrides the choice above):
#   LH_EVAL_OUT              results file (default results/eval.md, results/eval-full.md)
#   LH_EVAL_LENGTHS          pass-key lengths (default 256,1024,4096,8192,16384,32768,131072)
#   LH_EVAL_TRIALS           LongHeads trials per length up to 32768 (default 20)
#   LH_EVAL_LONG_TRIALS      LongHeads trials per length past 32768 (default 5; long version 20)
#   LH_EVAL_FULL_TRIALS      full-attention trials per length up to 8192 (default 20)
#   LH_EVAL_FULL_16K_TRIALS  full-attention trials per length in 8193..16384 (default 3)
#   LH_EVAL_FULL_LONG_TRIALS full-attention trials per length past 16384 (default 1)
#   LH_EVAL_FULL_MAX         longest length run with full attention (default 32768; 131072)
#   LH_EVAL_SEED             seed of the keys and depths (default 1)
#   LH_EVAL_BOUND_MAX        longest length run with the bound chunk score and with --recent
#                            (default 32768)
#   LH_EVAL_RECENT           the other number of recent chunks measured (default 4)
#   LH_EVAL_MODELS           the pass-key models (default the two above)
#   LH_EVAL_SKIP_PPL         set: skip part 1
#   LH_EVAL_THREADS          compute threads of the daemon and longheads-ppl (default 1)
#
# Every daemon started here is stopped by its PID (SIGTERM, then SIGKILL after 30 s), also on
# Ctrl-C and on errors.
set -u

B=${1:-build}
FULL=${LH_EVAL_FULL:-${EVAL_FULL:-}}
[ "$FULL" = 0 ] && FULL=
if [ -n "$FULL" ]; then
    OUT=${LH_EVAL_OUT:-results/eval-full.md}
    LONG_TRIALS=${LH_EVAL_LONG_TRIALS:-20} FULL_MAX=${LH_EVAL_FULL_MAX:-131072}
else
    OUT=${LH_EVAL_OUT:-results/eval.md}
    LONG_TRIALS=${LH_EVAL_LONG_TRIALS:-5} FULL_MAX=${LH_EVAL_FULL_MAX:-32768}
fi
TRIALS=${LH_EVAL_TRIALS:-20}
FULL_TRIALS=${LH_EVAL_FULL_TRIALS:-20}
FULL_16K=${LH_EVAL_FULL_16K_TRIALS:-3}
FULL_LONG=${LH_EVAL_FULL_LONG_TRIALS:-1}
LENGTHS=${LH_EVAL_LENGTHS:-256,1024,4096,8192,16384,32768,131072}
SEED=${LH_EVAL_SEED:-1}
BOUND_MAX=${LH_EVAL_BOUND_MAX:-32768}
RECENT=${LH_EVAL_RECENT:-4}
THREADS=${LH_EVAL_THREADS:-1}
BUNDLED=models/stories260K.gguf
TEXT=tests/data/stories-long.txt

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

# log_cmd ARGS...: records a command, as run, for the results file (with $B as written).
log_cmd() { echo "$*" | sed -e "s|$tmp/lh.sock|\$SOCK|g" -e "s|$tmp/|/tmp/|g" >>"$tmp/commands"; }

now() { date +%s; }
t_all=$(now)
start_date=$(date -u '+%Y-%m-%d %H:%M UTC')
start_load=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$tmp/commands"
# the commit the figures come from (taken now: the tree may change while this runs)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no -- . ':!results' 2>/dev/null)
[ -n "$dirty" ] && commit="$commit (with uncommitted changes)"

# start_daemon MODEL CTX: longheadsd on $sock, waits until it answers (up to 120 s).
start_daemon() {
    set -- --model "$1" --socket "$sock" --ctx "$2" --timeout 0 --threads "$THREADS" \
           --log-file "$tmp/daemon.log"
    log_cmd "$B/longheadsd $* &"
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

# fmt_ppl X: three significant figures, no exponent
fmt_ppl() { awk -v x="$1" 'BEGIN { if (x >= 100) printf "%.0f", x; else if (x >= 10) printf "%.1f", x; else printf "%.2f", x }'; }

# ---- 1. perplexity ------------------------------------------------------------------------------
ppl_table=
if [ -z "${LH_EVAL_SKIP_PPL:-}" ]; then
    bucket=512
    echo "== perplexity of $TEXT under $BUNDLED, buckets of $bucket tokens"
    # name | options: the tool's defaults are the second column
    set -- "full attention" "--attn full" \
           "default" "" \
           "LongHeads w=32 L=512" "--chunk 32 --window 512" \
           "LongHeads w=32 L=256" "--chunk 32 --window 256" \
           "LongHeads w=64 L=512, bound score" "--score bound" \
           "LongHeads w=64 L=512, recent $RECENT" "--recent $RECENT" \
           "LongHeads w=64 L=512, recent $RECENT, bound score" "--recent $RECENT --score bound"
    k=0 header="| tokens |" rule="|---|"
    while [ $# -ge 2 ]; do
        name=$1 args=$2
        shift 2
        k=$((k + 1))
        t0=$(now)
        log_cmd "$B/longheads-ppl -m $BUNDLED -f $TEXT --bucket $bucket --threads $THREADS${args:+ $args}"
        # shellcheck disable=SC2086  # args is a list of options
        if ! "$B/longheads-ppl" -m "$BUNDLED" -f "$TEXT" --bucket "$bucket" --threads "$THREADS" \
                $args >"$tmp/ppl-$k" 2>"$tmp/ppl-$k.err"; then
            echo "eval: longheads-ppl $args failed:" >&2
            cat "$tmp/ppl-$k.err" >&2
            exit 1
        fi
        summary=$(tail -n 1 "$tmp/ppl-$k.err")
        echo "  $summary ($(($(now) - t0)) s)"
        if [ "$name" = default ]; then
            # "longheads-ppl: 17697 tokens, attn longheads (chunk 64, window 512), ..."
            w=$(echo "$summary" | sed -n 's/.*(chunk \([0-9]*\), window \([0-9]*\)[,)].*/w=\1 L=\2/p')
            [ -n "$w" ] || { echo "eval: cannot read the default settings from: $summary" >&2; exit 1; }
            name="LongHeads $w (default)"
            ppl_default=$w
        fi
        header="$header $name |" rule="$rule---:|"
    done
    n_tok=$(sed -n 's/^longheads-ppl: \([0-9]*\) tokens.*/\1/p' "$tmp/ppl-1.err")
    # rows: the first bucket (inside the trained window), the buckets starting at 4x, 8x, 16x and
    # 32x the trained length (those the text has), then the whole text
    ppl_table=$(
        echo "$header"
        echo "$rule"
        for start in 0 2048 4096 8192 16384 overall; do
            case $start in
            0) label="0-511 (inside the window)" ;;
            overall) label="all $n_tok tokens" ;;
            *) label="$start-$((start + bucket - 1)) ($((start / 512))x)" ;;
            esac
            row="| $label |" found=1
            i=1
            while [ $i -le $k ]; do
                if [ "$start" = overall ]; then
                    v=$(awk '$1 == "overall" { print $3 }' "$tmp/ppl-$i")
                else
                    v=$(awk -v s="$start" '$1 == "tokens" { split($2, r, "-"); if (r[1] == s) print $4 }' "$tmp/ppl-$i")
                fi
                [ -n "$v" ] || found=0
                row="$row $(fmt_ppl "${v:-0}") |"
                i=$((i + 1))
            done
            [ $found = 1 ] && echo "$row"
        done
    )
    echo "$ppl_table"
    echo
fi

# ---- 2. passkey ---------------------------------------------------------------------------------
models=${LH_EVAL_MODELS:-}
if [ -z "$models" ]; then
    for m in models/passkey-aligned.gguf models/passkey-plain.gguf; do
        [ -f "$m" ] && models="$models $m"
    done
fi
[ -n "$models" ] || { echo "eval: no pass-key model (models/PASSKEY.md)" >&2; exit 1; }

max_len=0
for n in $(echo "$LENGTHS" | tr ',' ' '); do
    [ "$n" -gt "$max_len" ] && max_len=$n
done
ctx=$((max_len + 64))

lh_trials() { if [ "$1" -le 32768 ]; then echo "$TRIALS"; else echo "$LONG_TRIALS"; fi; }
bound_trials() { if [ "$1" -le "$BOUND_MAX" ]; then echo "$TRIALS"; else echo 0; fi; }
full_trials() {
    if [ "$1" -gt "$FULL_MAX" ]; then echo 0
    elif [ "$1" -le 8192 ]; then echo "$FULL_TRIALS"
    elif [ "$1" -le 16384 ]; then echo "$FULL_16K"
    else echo "$FULL_LONG"; fi
}

# passkey_cell N TRIALS ARGS...: one `longheads passkey` run at one length; prints "k/n".
rc=0
passkey_cell() {
    n=$1 t=$2
    shift 2
    log_cmd "$B/longheads --socket $sock passkey --seed $SEED --lengths $n --trials $t${*:+ $*}"
    if ! "$B/longheads" --socket "$sock" passkey --seed "$SEED" --lengths "$n" --trials "$t" "$@" \
            >"$tmp/pk" 2>"$tmp/pk.err"; then
        echo "eval: passkey at $n tokens failed:" >&2
        cat "$tmp/pk" "$tmp/pk.err" >&2
        rc=3
        echo "error"
        return
    fi
    echo "    $(grep '^length ' "$tmp/pk")" >&2
    # "length 256: 2/2 correct (no misses); 0.1 s, prefill 7314 tok/s"
    sed -n 's/^length [0-9]*: \([0-9]*\/[0-9]*\) correct.*/\1/p' "$tmp/pk"
}

# One row of the passkey table into pk_rows: label, the function giving the trials per length
# (0: "not run"), then the extra arguments of `longheads passkey`.
pk_row() {
    row="| $1 |"
    trials_of=$2
    shift 2
    for n in $(echo "$LENGTHS" | tr ',' ' '); do
        t=$("$trials_of" "$n")
        if [ "$t" -gt 0 ]; then
            row="$row $(passkey_cell "$n" "$t" "$@") |"
        else
            row="$row not run |"
        fi
    done
    pk_rows="$pk_rows$row
"
}

pk_header="| model, attention |" pk_rule="|---|"
for n in $(echo "$LENGTHS" | tr ',' ' '); do
    pk_header="$pk_header $n |" pk_rule="$pk_rule---:|"
done
pk_rows=
mem_rows=
pk_settings=
for model in $models; do
    [ -f "$model" ] || { echo "eval: $model: no such file" >&2; exit 1; }
    mname=$(basename "$model" .gguf)
    echo "== passkey: $model, lengths $LENGTHS, seed $SEED (daemon context $ctx tokens)"
    start_daemon "$model" "$ctx" || exit 1
    "$B/longheads" --socket "$sock" info >"$tmp/info" || exit 1
    # "attention:     longheads, chunk 32, window 256 (each head ...)"
    settings=$(sed -n 's/^attention: *longheads, chunk \([0-9]*\), window \([0-9]*\).*/w=\1 L=\2/p' "$tmp/info")
    [ -n "$settings" ] || { echo "eval: the daemon's default attention is not LongHeads:" >&2; cat "$tmp/info" >&2; exit 1; }
    case " $pk_settings " in *" $settings "*) ;; *) pk_settings="$pk_settings${pk_settings:+, }$settings" ;; esac
    chunk=${settings#w=}
    chunk=${chunk%% *}

    echo "-- LongHeads at the daemon's defaults ($settings)"
    pk_row "$mname, LongHeads $settings" lh_trials
    # memory after the longest LongHeads prompt (before the bound score's slot replaces it);
    # bytes per token from the model's shape: KV = 2 (K and V) x layers x kv heads x head dim x
    # element size; the chunk representations of LongHeads = layers x heads x head dim x element
    # size (they are stored in the KV cache's type) per chunk
    mem_rows="$mem_rows$(awk -v name="$mname" -v len="$max_len" -v w="$chunk" '
        FILENAME ~ /status$/ { if ($1 == "VmHWM:") hwm = $2; next }
        # "layers:        4, embedding 128, heads 4 (kv 4), vocabulary 607"
        /^layers:/ { gsub(/[,()]/, ""); nl = $2; emb = $4; nh = $6; nkv = $8 }
        /^context:/ { kv = ($0 ~ /KV f16/) ? 2 : 4 }
        END {
            hd = emb / nh
            kvb = 2 * nl * nkv * hd * kv
            lhb = nl * nh * hd * kv / w
            printf "| %s | %d | %.0f MiB | %d B | %g B | %.0f MiB |\n", name, len, hwm / 1024,
                   kvb, lhb, (kvb + lhb) * len / 1048576
        }' "$tmp/info" "/proc/$daemon_pid/status")
"

    echo "-- LongHeads ($settings) with the bound chunk score"
    pk_row "$mname, LongHeads $settings, bound score" bound_trials --score bound
    echo "-- LongHeads ($settings), $RECENT recent chunks"
    pk_row "$mname, LongHeads $settings, recent $RECENT" bound_trials --recent "$RECENT"
    pk_row "$mname, LongHeads $settings, recent $RECENT, bound score" lh_trials \
        --recent "$RECENT" --score bound
    echo "-- full attention"
    pk_row "$mname, full" full_trials --attn full
    stop_daemon
    echo
done
pk_table=$(printf '%s\n%s\n%s' "$pk_header" "$pk_rule" "$pk_rows")
echo "$pk_table"
mem_table=$(printf '%s\n%s\n%s' \
    "| model | prompt tokens | daemon peak RSS | KV cache per token | chunk representations per token | both at that length |" \
    "|---|---:|---:|---:|---:|---:|" "$mem_rows")
echo "$mem_table"

# ---- the results file ---------------------------------------------------------------------------
t_total=$(($(now) - t_all))
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
[ -n "$cpu" ] || cpu=$(uname -m)
mem=$(awk '$1 == "MemTotal:" { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
if [ -n "$FULL" ]; then how="make eval EVAL_FULL=1"; else how="make eval"; fi
# trials_note FUNCTION: "20 trials at 256..8192, 3 at 16384, not run at 131072"
trials_note() {
    for n in $(echo "$LENGTHS" | tr ',' ' '); do echo "$n $($1 "$n")"; done | awk '
        function flush() {
            if (first == "") return
            what = (cur == 0) ? "not run" : cur (cur == 1 ? " trial" : " trials")
            out = out (out == "" ? "" : ", ") what " at " first (last != first ? ".." last : "")
        }
        { if ($2 != cur || first == "") { flush(); cur = $2; first = $1 } last = $1 }
        END { flush(); print out }'
}
lh_note=$(trials_note lh_trials)
bound_note=$(trials_note bound_trials)
full_note=$(trials_note full_trials)
mkdir -p "$(dirname "$OUT")"
{
    echo "# Evaluation results"
    echo
    echo "Written by \`$how\` (tools/eval.sh) on $start_date."
    echo
    echo "- Machine: $cpu, $(nproc) cores, $mem; load average at the start $start_load."
    echo "- Commit: $commit."
    echo "- Every run with $THREADS compute thread(s); the whole evaluation took $t_total s of wall time."
    echo "  The figures are deterministic (greedy decoding, fixed seed); only the wall time depends"
    echo "  on the machine and on what else ran on it."
    echo
    if [ -n "$ppl_table" ]; then
        echo "## Perplexity past the trained length"
        echo
        echo "\`longheads-ppl\` on \`$TEXT\` ($n_tok tokens) under \`$BUNDLED\`"
        echo "(trained at 512 tokens), per bucket of $bucket positions.  w = chunk size, L = the"
        echo "window each head attends to; \"default\" is what the tool does without options"
        echo "($ppl_default, the file's \`longheads.*\` keys); \"bound score\": \`--score bound\`;"
        echo "\"recent $RECENT\": \`--recent $RECENT\`, every head keeps the last $RECENT chunks (the current one"
        echo "included) instead of the paper's 2, and fills the other slots by score."
        echo
        echo "$ppl_table"
        echo
    fi
    echo "## Passkey retrieval"
    echo
    echo "\`longheads passkey\` through the daemon (greedy, seed $SEED, random keys and depths):"
    echo "correct/trials per prompt length in tokens.  LongHeads at the daemon's defaults (the"
    echo "files' \`longheads.*\` keys: $pk_settings): $lh_note.  \"bound score\": the chunk"
    echo "score \`--score bound\` (an upper bound of q·k from the keys' min and max) instead of the"
    echo "paper's representations: $bound_note.  \"recent $RECENT\": \`--recent $RECENT\` (every head"
    echo "keeps the last $RECENT chunks, the current one included, instead of the paper's 2): $bound_note;"
    echo "with the bound score as LongHeads at the defaults, $lh_note."
    echo "Full attention: $full_note (its cost grows with the square of the length)."
    echo
    echo "$pk_table"
    echo
    echo "Memory after the longest LongHeads prompt (peak resident set of the daemon, VmHWM; per"
    echo "token from the model's shape: KV cache F16 (the daemon's default), chunk representations in the same type):"
    echo
    echo "$mem_table"
    echo
    echo "## Commands"
    echo
    echo "Run from the repository root, in this order; \$SOCK is the daemon's socket (a temporary"
    echo "directory's), each daemon stopped with SIGTERM after the commands that follow it."
    echo
    echo '```sh'
    cat "$tmp/commands"
    echo '```'
} >"$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo "eval: wrote $OUT in $t_total s"
exit $rc
