#!/bin/sh
# tests/readme.sh — runs every command of README.md's "Using it" block as written, in order:
# `make run` in the background (as a person would in another terminal; the default socket goes
# to a temporary $XDG_RUNTIME_DIR), then each line with `sh -c`, which must exit 0 and, unless it
# only starts something in the background, print something.  Comments and blank lines are
# skipped; a trailing `\` joins lines.  Run from the repository root (make test does).
set -u
tmp=$(mktemp -d)
export XDG_RUNTIME_DIR="$tmp"
unset LONGHEADS_SOCKET
pass=0 fail=0
pgids=""
cleanup() {
    for g in $pgids; do kill -TERM "-$g" 2>/dev/null; done
    sleep 0.5
    for g in $pgids; do kill -KILL "-$g" 2>/dev/null; done
    rm -rf "$tmp" /tmp/passkey.sock
}
trap cleanup EXIT
check() { # name, status
    if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "  readme: $1 ... passed"
    else fail=$((fail + 1)); echo "  readme: $1 ... FAILED"; fi
}

# the block: from the first ```sh after "## Using it" to the closing ```
awk '/^## Using it/ { on = 1 } on && /^```sh/ { inb = 1; next } inb && /^```/ { exit } inb' \
    README.md > "$tmp/block"
# strip comments (none of the commands has a #), join continuations, drop blank lines
sed -e 's/[[:space:]]*#.*$//' "$tmp/block" | awk '
    { line = line $0 }
    /\\$/ { sub(/\\$/, "", line); next }
    { if (line ~ /[^[:space:]]/) print line; line = "" }' > "$tmp/commands"
n=$(wc -l < "$tmp/commands")
[ "$n" -ge 8 ]
check "the block has $n commands" $?

i=0
while IFS= read -r cmd; do
    i=$((i + 1))
    case "$cmd" in
    "make run")
        setsid make run > "$tmp/make-run.log" 2>&1 < /dev/null &
        pgids="$pgids $!"
        k=0
        until build/longheads health > /dev/null 2>&1; do
            k=$((k + 1))
            if [ $k -gt 600 ]; then cat "$tmp/make-run.log"; break; fi
            sleep 0.1
        done
        build/longheads health > /dev/null 2>&1
        check "$i: $cmd (the daemon answers)" $?
        ;;
    *"&"*)
        setsid sh -c "$cmd" > "$tmp/out.$i" 2>&1 < /dev/null &
        bg=$!
        pgids="$pgids $bg"
        # what it started in the background must still run after the line's own wait
        sleep 2
        r=0
        kill -0 "-$bg" 2>/dev/null || r=1
        grep -qi "error\|cannot" "$tmp/out.$i" && r=1
        check "$i: $cmd" $r
        ;;
    *)
        timeout 600 sh -c "$cmd" > "$tmp/out.$i" 2> "$tmp/err.$i" < /dev/null
        r=$?
        [ "$i" -ne "${LH_README_SHOW:-0}" ] || cat "$tmp/out.$i"
        if [ $r -ne 0 ] || [ ! -s "$tmp/out.$i" ]; then
            echo "    exit status $r; stderr:"; tail -5 "$tmp/err.$i"
            r=1
        fi
        check "$i: $cmd" $r
        ;;
    esac
done < "$tmp/commands"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
