#!/bin/sh
# tools/kvfigures.sh BUILD [WHICH...] — the figures of the KV cache on disk (--kv-dir) and the
# persistent prompt cache (README, "A million tokens").  WHICH: passkey, decode, restart (default
# all three).  Long: the million-token passkey prefill takes about half an hour on 2 shared
# cores, the 262144-token decode comparison ~10 minutes (it writes ~9 GiB twice).
#
#   passkey  longheadsd on models/passkey-aligned.gguf, KV cache on disk under a 512 MiB budget
#            (--kv-dir, --max-memory 512M, 1 compute thread), `longheads passkey` at
#            LH_KV_PASSKEY_LEN (default 1048576) tokens, 1 trial: correct or not, the daemon's
#            peak RSS (VmHWM) and the wall time.
#   decode   longheads-kvbench (tools/kvbench.c) on the stories110M shape (BENCH_MODEL, default
#            /work/main/build/bench/small-f16.gguf), F16 KV, LongHeads w=64 L=512, a made-up
#            context of LH_KV_DECODE_LEN (default 262144) tokens: decode tok/s with the KV cache on
#            disk under a 1 GiB budget, then the same context in memory.
#   restart  longheadsd on passkey-aligned with --kv-dir (prompt cache on): a passkey prompt of
#            LH_KV_RESTART_LEN (default 65536) tokens, SIGTERM, restart, the same prompt again:
#            reused tokens and the time to the answer (prefill ms from the daemon's log).
#
# The passkey and restart daemons run with an F32 KV cache (--kv f32, LH_KV_TYPE to change it):
# the README's figures were measured that way, before the daemon's default became F16.
#
# Scratch in LH_KV_TMP (default a new /tmp/lh-kvfig-XXXXXX, removed at the end).  Every daemon
# started here is stopped by its PID.
set -u
B=${1:-build}
shift 2>/dev/null
WHICH=${*:-passkey decode restart}
MODEL_PK=models/passkey-aligned.gguf
BENCH_MODEL=${BENCH_MODEL:-/work/main/build/bench/small-f16.gguf}
KV=${LH_KV_TYPE:-f32}
T=${LH_KV_TMP:-$(mktemp -d /tmp/lh-kvfig-XXXXXX)}
mkdir -p "$T/kv"
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT INT TERM

start() { # start LOG ARGS...: longheadsd on $T/s.sock
    log=$1; shift
    rm -f "$T/s.sock"
    GOMP_SPINCOUNT=10000 "$B/longheadsd" --socket "$T/s.sock" --threads 1 --timeout 0 "$@" \
        2>>"$log" &
    pid=$!
    i=0
    while [ ! -S "$T/s.sock" ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i + 1)); done
}
stop() { kill "$pid"; wait "$pid"; pid=; }
now() { date +%s.%N; }

echo "# kvfigures $(date -u '+%F %T') UTC, commit $(git rev-parse --short=12 HEAD 2>/dev/null)," \
     "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for w in $WHICH; do
case $w in
passkey)
    L=${LH_KV_PASSKEY_LEN:-1048576}
    start "$T/pk.log" -m $MODEL_PK --kv-dir "$T/kv" --max-memory 512M --prompt-cache-size 0 --kv "$KV"
    t0=$(now)
    "$B/longheads" --socket "$T/s.sock" passkey --lengths "$L" --trials 1 --timeout 0 -v
    t1=$(now)
    echo "passkey $L: wall $(echo "$t1 - $t0" | bc) s; daemon $(grep VmHWM /proc/$pid/status)"
    grep -E "context .* tokens per slot" "$T/pk.log"
    stop ;;
decode)
    L=${LH_KV_DECODE_LEN:-262144}
    for where in disk memory; do
        if [ $where = disk ]; then
            set -- --kv-dir "$T/kv" --max-memory 1G
        else
            set -- --max-memory 16G
        fi
        "$B/longheads-kvbench" -m "$BENCH_MODEL" --fill "$L" --decode 33 --kv f16 --chunk 64 \
            --window 512 --threads 1 "$@"
    done ;;
restart)
    L=${LH_KV_RESTART_LEN:-65536}
    for run in first restarted; do
        start "$T/rs.log" -m $MODEL_PK --kv-dir "$T/kv" --max-memory 512M --kv "$KV"
        echo "$run:"
        "$B/longheads" --socket "$T/s.sock" passkey --lengths "$L" --trials 1 --timeout 0 -v |
            grep "trial"
        stop
    done
    grep -E "generate, prompt|prompt cache" "$T/rs.log" ;;
esac
done
