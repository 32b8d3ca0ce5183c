#!/bin/sh
# tools/make-qfixtures.sh — regenerates tests/data/quant/ (the quantized-model fixtures of the
# `qfiles` test suite) with the tools of an EXISTING llama.cpp checkout and build.  It never
# downloads or builds llama.cpp.
#
#   sh tools/make-qfixtures.sh LLAMA_CPP_DIR [OUT_DIR]
#
# LLAMA_CPP_DIR must hold build/bin/{llama-quantize,llama-cli,llama-perplexity} and gguf-py/;
# PYTHON (default python3) must import numpy.  Run from the repository root after `make`
# (it uses build/longheads-mkmodel).  OUT_DIR defaults to tests/data/quant.  What each file is
# and why: tests/data/quant/README.md.
set -eu

LL=${1:?usage: sh tools/make-qfixtures.sh LLAMA_CPP_DIR [OUT_DIR]}
OUT=${2:-tests/data/quant}
BIN=$LL/build/bin
PY=${PYTHON:-python3}
THREADS=2
export PYTHONPATH="$LL/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
for b in llama-quantize llama-cli llama-perplexity; do
    [ -x "$BIN/$b" ] || { echo "make-qfixtures: $BIN/$b is missing (build llama.cpp first)" >&2; exit 1; }
done
[ -x build/longheads-mkmodel ] || { echo "make-qfixtures: run make first" >&2; exit 1; }
"$PY" -c 'import numpy, gguf' || { echo "make-qfixtures: $PY needs numpy and gguf-py" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
rm -f "$OUT"/*.gguf "$OUT"/expected.txt "$OUT"/types.txt "$OUT"/dequant.txt "$OUT"/dequant.bin
Q="$BIN/llama-quantize"
QF="$PY tools/qfixtures.py"

# 1. stories260K (models/stories260K.gguf, F32: rows of 64 and 172) under every preset.  The
#    legacy presets (Q4_0 ... Q8_0) fail: ffn_down's rows of 172 are not a multiple of 32.
#    Presets whose tensors come out byte-identical to an earlier one are not kept.
S260=models/stories260K.gguf
kept=""
for p in Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_0 Q4_1 Q5_0 Q5_1 Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q8_0; do
    f="$TMP/stories260K-$p.gguf"
    if ! "$Q" "$S260" "$f" "$p" 1 >"$TMP/q.log" 2>&1; then
        echo "stories260K $p: llama-quantize refuses ($(grep 'not divisible' "$TMP/q.log" | tail -1 | sed 's/^.*get_type : //; s/llama_model_quantize.*//'))"
        continue
    fi
    dup=""
    for k in $kept; do
        if $QF same "$f" "$TMP/stories260K-$k.gguf"; then dup=$k; break; fi
    done
    if [ -n "$dup" ]; then
        echo "stories260K $p: tensors byte-identical to $dup's, not kept"
        continue
    fi
    kept="$kept $p"
    cp "$f" "$OUT/"
done

# 2. A random-weight model with every row a multiple of 256 (dim 256, ff 256, 1 layer, 4 heads
#    of 64 with 1 KV head, 288 tokens), made decisive (tools/qfixtures.py decisive, strength 8,
#    layer gain 10), under ten presets.
build/longheads-mkmodel -o "$TMP/rand-raw.gguf" --dim 256 --ff 256 --layers 1 --heads 4 \
    --kv-heads 1 --vocab 288 --ctx 1024 --seed 1
$QF decisive "$TMP/rand-raw.gguf" "$TMP/rand-F32.gguf" --strength 8 --layer-gain 10 --seed 7
for p in Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K; do
    "$Q" "$TMP/rand-F32.gguf" "$OUT/rand-$p.gguf" "$p" 1 >"$TMP/q.log" 2>&1 ||
        { cat "$TMP/q.log" >&2; exit 1; }
done
$QF words "$OUT/rand-words.txt" --model "$TMP/rand-F32.gguf" --count 600 --seed 11

# 3. What each file holds, per tensor; the dequantization fixtures.
$QF types "$OUT"/*.gguf >"$OUT/types.txt"
$QF dequant "$OUT/dequant" "$OUT"/*.gguf

# 4. llama.cpp's greedy 64 tokens and perplexity for each model (and for the F32 originals).
#    llama-cli logs every evaluated batch with --verbose; with -n 65 the 64 generated tokens
#    after the prompt are all evaluated (generation stops early only at an end-of-generation
#    token, which is then recorded as "eog").
expect() { # model prompt ppl_text ppl_ctx ppl_chunks
    "$BIN/llama-cli" -m "$1" -p "$2" -n 65 --temp 0 -no-cnv -t $THREADS -c 256 -s 1 -v \
        </dev/null >"$TMP/cli.out" 2>"$TMP/cli.err"
    ids=$($QF greedy "$TMP/cli.err")
    pids=$($QF prompt "$TMP/cli.err")
    n=$(echo "$ids" | wc -w)
    [ "$n" -ge 64 ] || ids="$ids eog"
    ids=$(echo "$ids" | cut -d' ' -f1-64)
    ppl=$("$BIN/llama-perplexity" -m "$1" -f "$3" -c "$4" --chunks "$5" -t $THREADS 2>&1 |
          sed -n 's/^Final estimate: PPL = \([0-9.]*\).*/\1/p')
    [ -n "$ppl" ] || { echo "make-qfixtures: no perplexity for $1" >&2; exit 1; }
    printf 'model %s\nprompt %s\nprompt_ids %s\nppl_text %s\nppl_ctx %s\nppl_chunks %s\nppl %s\ngreedy %s\n\n' \
        "$1" "$2" "$pids" "$3" "$4" "$5" "$ppl" "$ids" >>"$OUT/expected.txt"
}
expect "$S260" "Once upon a time" tests/data/stories-long.txt 128 16
for p in $kept; do
    expect "$OUT/stories260K-$p.gguf" "Once upon a time" tests/data/stories-long.txt 128 16
done
for p in Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K; do
    expect "$OUT/rand-$p.gguf" "a b c" "$OUT/rand-words.txt" 128 4
done
echo "make-qfixtures: wrote $OUT ($(du -ch "$OUT"/*.gguf | tail -1 | cut -f1) of models)"
