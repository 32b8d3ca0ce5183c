#!/bin/sh
# tools/make-stories.sh — how tests/data/stories-long.txt was made: stories260K writes 50 short
# stories itself (from BOS, 480 tokens at most each, temperature 0.8, top-p 0.95, top-k 40,
# min-p 0.05, seeds 1..50, full attention inside its trained 512 tokens); they are concatenated,
# one blank line between them.  The result is ~17k tokens: 32x the trained length.
#   sh tools/make-stories.sh [BUILD] > tests/data/stories-long.txt
set -eu
B=${1:-build}
for seed in $(seq 1 50); do
    "$B/longheads-run" -m models/stories260K.gguf -n 480 --ctx 512 --temp 0.8 --top-p 0.95 \
        --top-k 40 --min-p 0.05 --seed "$seed" 2>/dev/null
    printf '\n\n'
done
