#!/bin/sh
# tests/chat-tty.sh — `longheads chat` on a real terminal (a private tmux server): two turns, an
# answer cancelled with Ctrl-C (the chat goes on), /bye (exit status 0), and the second turn's
# prompt taken from the daemon's cache.  The system message is ~5,000 tokens of
# tests/data/stories-long.txt so that the first answer is still in its prefill when Ctrl-C comes.
set -u
B=${LH_BUILD:-build}
M=${LH_MODEL:-models/stories260K.gguf}
if ! command -v tmux >/dev/null 2>&1; then
    echo "  chat-tty: SKIP: tmux is not installed (apt-get install -y tmux); not counted as passed"
    exit 0
fi
dir=$(mktemp -d)
sock=$dir/d.sock
T="tmux -L lh-chat-$$"
dpid=
cleanup() {
    $T kill-server 2>/dev/null
    [ -n "$dpid" ] && kill "$dpid" 2>/dev/null && wait "$dpid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
pass=0 fail=0
check() { # name, status
    if [ "$2" -eq 0 ]; then pass=$((pass + 1)); echo "  chat-tty: $1 ... passed"
    else fail=$((fail + 1)); echo "  chat-tty: $1 ... FAILED"; fi
}

"$B/longheadsd" -m "$M" --socket "$sock" 2>"$dir/daemon.log" &
dpid=$!
i=0
until "$B/longheads" --socket "$sock" health >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 300 ] && { echo "  chat-tty: the daemon did not start"; cat "$dir/daemon.log"; exit 1; }
    sleep 0.1
done
head -c 20000 tests/data/stories-long.txt > "$dir/system.txt"
$T new-session -d -s chat -x 160 -y 50 \
    "$B/longheads --socket $sock chat --temp 0 -n 40 --system \"\$(cat $dir/system.txt)\"; echo EXIT=\$? > $dir/exit; sleep 30"

screen() { $T capture-pane -p -t chat -S -2000 2>/dev/null; }
# wait_for N: until the screen shows the N-th ">>>" prompt (up to 120 s; tmux drops its
# trailing space)
wait_for() {
    i=0
    while [ "$(screen | grep -c '^>>>')" -lt "$1" ]; do
        i=$((i + 1)); [ $i -gt 1200 ] && return 1
        sleep 0.1
    done
    return 0
}

wait_for 1
check "the chat starts and prompts" $?
$T send-keys -t chat "Hello there" Enter
sleep 0.3
$T send-keys -t chat C-c
wait_for 2
r=$?
screen | grep -q '^\[answer cancelled\]'
check "Ctrl-C cancels the answer, not the chat" $(( r || $? ))
$T send-keys -t chat "Once upon a time" Enter
wait_for 3
check "turn 1 is answered" $?
$T send-keys -t chat "What happened next?" Enter
wait_for 4
check "turn 2 is answered" $?
# both answers have text: the lines after the two questions
a1=$(screen | sed -n '/^>>> Once upon a time/,/^>>> /p' | sed '1d;$d' | tr -d ' \n')
a2=$(screen | sed -n '/^>>> What happened next?/,/^>>> /p' | sed '1d;$d' | tr -d ' \n')
[ -n "$a1" ] && [ -n "$a2" ]
check "both answers have text" $?
$T send-keys -t chat "/bye" Enter
i=0
while [ ! -s "$dir/exit" ] && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
grep -q '^EXIT=0$' "$dir/exit" 2>/dev/null
check "/bye quits with status 0" $?
# the daemon log: the cancelled request, then turn 2 reuses (almost) all of turn 1's prompt
grep -q 'finish cancelled (cancelled by the client)' "$dir/daemon.log"
check "the daemon saw the cancel" $?
reused=$(grep 'generate, prompt' "$dir/daemon.log" | tail -1 | sed -n 's/.*tokens (\([0-9]*\) reused).*/\1/p')
[ "${reused:-0}" -gt 4000 ]
check "turn 2 reuses the cached conversation (${reused:-0} tokens)" $?
if [ "$fail" -ne 0 ]; then
    echo "---- screen"; screen | tail -40; echo "---- daemon log"; tail -20 "$dir/daemon.log"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
