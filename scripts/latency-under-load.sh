#!/usr/bin/env bash
# Two trained models' latency ratio under a load that switches on and off, timed one after the
# other (two `automoe latency --model` calls) and together in rounds (one call with two --model),
# TRIALS times each: how far the comparison moves with the load. The load is a memory-streaming
# loop on the other core, on for LOAD_ON seconds and off for LOAD_OFF, as a build or a test run
# sharing the machine would be. Prints one line per trial and the spread of each way's ratios.
#
#   scripts/latency-under-load.sh MODEL_A MODEL_B [TRIALS] [CLOCK]
#
# Needs a release build (cargo build --release) and python3.
set -euo pipefail
a=${1:?model directory A}
b=${2:?model directory B}
trials=${3:-10}
clock=${4:-cpu}
bin=${AUTOMOE_BIN:-target/release/automoe}
on=${LOAD_ON:-1.5}
off=${LOAD_OFF:-1.5}

python3 - "$on" "$off" <<'EOF' &
import sys, time
on, off = float(sys.argv[1]), float(sys.argv[2])
buf = bytearray(256 << 20)
while True:
    end = time.monotonic() + on
    while time.monotonic() < end:
        bytes(buf)  # streams 256 MiB through the caches
    time.sleep(off)
EOF
load=$!
trap 'kill $load 2>/dev/null' EXIT

total() { sed -n 's/.*total \([0-9.]*\) ms.*/\1/p'; }
seq_ratios=()
rounds_ratios=()
for t in $(seq 1 "$trials"); do
    ta=$("$bin" latency --model "$a" --clock "$clock" 2>/dev/null | total)
    tb=$("$bin" latency --model "$b" --clock "$clock" 2>/dev/null | total)
    both=$("$bin" latency --model "$a" --model "$b" --clock "$clock" 2>/dev/null | total | paste -sd' ')
    ra=${both% *}
    rb=${both#* }
    sr=$(python3 -c "print(f'{$tb/$ta:.3f}')")
    rr=$(python3 -c "print(f'{$rb/$ra:.3f}')")
    seq_ratios+=("$sr")
    rounds_ratios+=("$rr")
    echo "trial $t: one after the other $ta / $tb ms (B/A $sr); together $ra / $rb ms (B/A $rr)"
done
python3 - "${seq_ratios[*]}" "${rounds_ratios[*]}" <<'EOF'
import statistics as st, sys
for name, xs in (("one after the other", sys.argv[1]), ("together in rounds", sys.argv[2])):
    v = [float(x) for x in xs.split()]
    print(f"{name}: B/A median {st.median(v):.3f}, range {min(v):.3f}-{max(v):.3f}, sd {st.stdev(v):.3f}")
EOF
