#!/bin/sh
# tests/evaltables.sh — README.md's evaluation tables must be results/eval.md's, verbatim.
#
# `make eval` writes results/eval.md; the README quotes its tables between the lines
# `<!-- begin: results/eval.md -->` and `<!-- end: results/eval.md -->`.  Every table line of the
# results file (a line starting with `|`) must appear there, in the same order, and nothing else
# may: a figure changed by hand or a rerun not copied over fails `make test`.  The README must also
# name the date the results file gives.  Run from the repository root (make test does).
set -u
res=${1:-results/eval.md}
readme=${2:-README.md}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "  evaltables: $*"; echo "  evaltables ... FAILED"; exit 1; }

[ -f "$res" ] || fail "$res is missing (make eval writes it)"
n_begin=$(grep -c '^<!-- begin: results/eval.md -->$' "$readme")
n_end=$(grep -c '^<!-- end: results/eval.md -->$' "$readme")
if [ "$n_begin" -lt 1 ] || [ "$n_begin" != "$n_end" ]; then
    fail "$readme: expected matching '<!-- begin: results/eval.md -->' / '<!-- end: ... -->' lines"
fi

grep '^|' "$res" > "$tmp/results"
[ -s "$tmp/results" ] || fail "$res has no table"
awk '/^<!-- begin: results\/eval.md -->$/ { on = 1; next }
     /^<!-- end: results\/eval.md -->$/ { on = 0 }
     on && /^[[:space:]]*\|/' "$readme" > "$tmp/readme"
if ! cmp -s "$tmp/results" "$tmp/readme"; then
    echo "  evaltables: the tables quoted in $readme differ from $res (< results, > README):"
    diff "$tmp/results" "$tmp/readme" | sed 's/^/    /' | head -40
    fail "copy $res's tables into $readme"
fi

# "Written by `make eval` (tools/eval.sh) on 2026-11-29 14:02 UTC."
# shellcheck disable=SC2016  # the backquotes are literal
day=$(sed -n 's/^Written by `make eval`.* on \([0-9-]*\) .*/\1/p' "$res")
[ -n "$day" ] || fail "$res does not say it was written by \`make eval\` on a date"
grep -q "results/eval.md.*$day\|$day.*results/eval.md" "$readme" ||
    fail "$readme does not say its tables come from results/eval.md of $day"
echo "  evaltables: $(wc -l < "$tmp/results") table lines of $res (of $day) quoted verbatim ... passed"
