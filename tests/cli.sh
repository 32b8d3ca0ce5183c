#!/bin/sh
# tests/cli.sh — the one-shot runner's contract, checked on the real binaries:
#   longheads-run -m <bundled model> -n 256 --temp 0 prints exactly the golden text.
# Every check looks at the exit status and at non-empty output: a crash or an empty run fails.
set -u
B=${LH_BUILD:-build}
M=${LH_MODEL:-models/stories260K.gguf}
pass=0 fail=0
check() { # name, 0 when the check holds
    if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "  cli: $1 ... passed"
    else fail=$((fail + 1)); echo "  cli: $1 ... FAILED"; fi
}
out=$(mktemp); trap 'rm -f "$out"' EXIT

"$B/longheads-run" -m "$M" -n 256 --temp 0 >"$out" 2>/dev/null
r=$?
[ $r -eq 0 ] && [ -s "$out" ] && cmp -s "$out" tests/data/stories260K.golden.txt
check "longheads-run -n 256 --temp 0 prints the golden text" $?

"$B/longheads-run" -m "$M" -p "Once upon a time" -n 40 --temp 0 >"$out" 2>/dev/null
r=$?
# the continuation of the prompt is the golden text after "Once upon a time": the output is a
# non-empty prefix of it (40 tokens are far more than a few bytes)
golden_tail=$(tail -c +17 tests/data/stories260K.golden.txt)
got=$(cat "$out")
r2=1
if [ $r -eq 0 ] && [ ${#got} -ge 40 ]; then
    case "$golden_tail" in "$got"*) r2=0 ;; esac
fi
check "longheads-run continues 'Once upon a time' like the golden text" $r2

"$B/longheads-run" -m "$M" -n 80 --temp 0.9 --seed 7 >"$out" 2>/dev/null
r=$?
a=$(cat "$out")
"$B/longheads-run" -m "$M" -n 80 --temp 0.9 --seed 7 >"$out" 2>/dev/null
r=$((r + $?))
b=$(cat "$out")
"$B/longheads-run" -m "$M" -n 80 --temp 0.9 --seed 8 >"$out" 2>/dev/null
r=$((r + $?))
c=$(cat "$out")
# same seed: the same (non-empty) text; another seed: other text (so the seed is used at all)
[ $r -eq 0 ] && [ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" != "$c" ]
check "same seed, same text; another seed, other text" $?

"$B/longheads-run" -m tests/data/stories260K.golden.txt -n 1 >/dev/null 2>"$out"
r=$?
[ $r -eq 1 ] && grep -q "stories260K.golden.txt" "$out"
check "a file that is not GGUF is refused with its name" $?

"$B/longheads-run" -m "$M" --attn bogus >/dev/null 2>&1
[ $? -eq 2 ]
check "a bad option value is a usage error" $?

# One generation loop (engine/gen.c): the daemon's Generate and longheads-run give the same bytes
# for the same request, greedy and seeded.  The CLI ends its output with a newline; the runner
# prints the text alone, so a newline is added to its output when it lacks one.
dir=$(mktemp -d)
sock=$dir/d.sock
"$B/longheadsd" -m "$M" --socket "$sock" 2>"$dir/daemon.log" &
dpid=$!
trap 'kill "$dpid" 2>/dev/null; wait "$dpid" 2>/dev/null; rm -rf "$dir" "$out"' EXIT
i=0
until "$B/longheads" --socket "$sock" health >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 300 ] && { echo "  cli: the daemon did not start"; cat "$dir/daemon.log"; break; }
    sleep 0.1
done
same_text() { # prompt, then the sampling options for both
    p=$1; shift
    "$B/longheads-run" -m "$M" -p "$p" "$@" >"$dir/run.out" 2>/dev/null || return 1
    [ -n "$(tail -c 1 "$dir/run.out")" ] && echo >>"$dir/run.out"
    "$B/longheads" --socket "$sock" generate "$@" -p "$p" >"$dir/gen.out" 2>/dev/null || return 1
    [ "$(wc -c <"$dir/run.out")" -gt 40 ] && cmp "$dir/run.out" "$dir/gen.out"
}
same_text "Once upon a time" -n 64 --temp 0
check "daemon and longheads-run: the same text, greedy" $?
same_text "The little dog" -n 64 --temp 0.9 --seed 7
check "daemon and longheads-run: the same text, --temp 0.9 --seed 7" $?
same_text "Lily wanted" -n 64 --temp 1.2 --seed 123 --top-k 0 --top-p 1 --min-p 0
check "daemon and longheads-run: the same text, --temp 1.2 --seed 123, no truncation" $?

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -eq 8 ]
