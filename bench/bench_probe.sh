#!/usr/bin/env bash
# `tunelens probe` speed: SmolLM2-135M, 500 arithmetic prompts ({"text": "a op b =", "label":
# op} from `tunelens data math`'s test split), every layer (30), a task and a control probe each.
# Prints each run's time split — model load + I/O, the batched forward passes, the L-BFGS fits —
# as wall time and as CPU time (user + sys, all threads): on a shared machine the wall time says
# how busy the others were, the CPU time what the work costs. Target (issue 16): < 30 s wall on
# the 2-core CPU.
# usage: bench/bench_probe.sh [MODEL.gguf]
#   BIN=... the binary (default ./tunelens), BASE=... a second binary run in turn with BIN
#   (before/after in the same conditions), RUNS=... runs of each (default 3), OUT=... the folder
#   for the data and the numbers (default /tmp/tunelens-bench-probe; numbers in OUT/runs.tsv).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-.cache/SmolLM2-135M-Instruct.Q4_1.gguf}
BIN=${BIN:-./tunelens}
BASE=${BASE:-}
RUNS=${RUNS:-3}
OUT=${OUT:-/tmp/tunelens-bench-probe}
mkdir -p "$OUT"
[ -s "$OUT/math/test.jsonl" ] || $BIN data math --out "$OUT/math" --seed 0 >/dev/null
# {"text": "97 - 19 = 78"} -> {"text": "97 - 19 =", "label": "-"}
sed -E 's/^\{"text": "([0-9]+) ([-+*]) ([0-9]+) = [0-9-]+"\}$/{"text": "\1 \2 \3 =", "label": "\2"}/' \
    "$OUT/math/test.jsonl" | head -500 > "$OUT/probe.jsonl"
n=$(grep -c '"label"' "$OUT/probe.jsonl")
[ "$n" = 500 ] || { echo "bench_probe: $OUT/probe.jsonl has $n labelled lines, not 500" >&2; exit 1; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cpus; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet -- src/analysis/probe.c src/cli/probe.c || echo '+dirty')"
echo "model: $MODEL; data: $OUT/probe.jsonl (500 prompts, every layer)"
printf 'binary\trun\twall\tcpu\tload_wall\tforward_wall\tforward_cpu\tfit_wall\tfit_cpu\tloadavg\n' > "$OUT/runs.tsv"
one() {  # BINARY TAG RUN
    local bin=$1 tag=$2 r=$3 load
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f '%e %U %S' -o "$OUT/time.txt" "$bin" probe --model "$MODEL" \
        --data "$OUT/probe.jsonl" --json "$OUT/$tag.$r.json" > "$OUT/$tag.$r.txt" 2> "$OUT/$tag.$r.err"
    read -r wall user sys < "$OUT/time.txt"
    python3 - "$OUT/$tag.$r.json" "$wall" "$user" "$sys" "$tag" "$r" "$load" "$OUT/runs.tsv" <<'EOF'
import json, math, sys
j, wall, user, sys_, tag, r, load, tsv = sys.argv[1], *map(float, sys.argv[2:5]), *sys.argv[5:]
s = json.load(open(j))["seconds"]
# a binary from before the CPU times were reported has none: n/a
fc, tc = s.get("cpu_forward", math.nan), s.get("cpu_fit", math.nan)
lw = wall - s["forward"] - s["fit"]
with open(tsv, "a") as f:
    print(f"{tag}\t{r}\t{wall:.2f}\t{user + sys_:.2f}\t{lw:.2f}\t{s['forward']:.2f}\t{fc:.2f}\t"
          f"{s['fit']:.2f}\t{tc:.2f}\t{load}", file=f)
cpu = lambda v: "CPU   n/a" if math.isnan(v) else f"CPU {v:5.2f}s"
print(f"{tag:5s} run {r}: wall {wall:6.2f}s (CPU {user + sys_:6.2f}s) = load+I/O {lw:5.2f}s + "
      f"forward {s['forward']:6.2f}s ({cpu(fc)}) + fits {s['fit']:6.2f}s ({cpu(tc)})  "
      f"[load avg {load}]")
EOF
}
for r in $(seq 1 "$RUNS"); do
    [ -n "$BASE" ] && one "$BASE" base "$r"
    one "$BIN" new "$r"
done
# the tables of the two binaries must agree (accuracy, control, train per layer)
if [ -n "$BASE" ]; then
    python3 - "$OUT/base.1.json" "$OUT/new.1.json" <<'EOF'
import json, sys
a, b = (json.load(open(p))["layers"] for p in sys.argv[1:3])
key = lambda l: (l["layer"], l["accuracy"], l["control_accuracy"], l["train_accuracy"])
same = [key(x) == key(y) for x, y in zip(a, b)]
print(f"tables: {sum(same)}/{len(same)} layers identical (accuracy, control, train)")
EOF
fi
python3 - "$OUT/runs.tsv" <<'EOF'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
for tag in dict.fromkeys(r["binary"] for r in rows):
    rs = [r for r in rows if r["binary"] == tag]
    med = lambda k: st.median(float(r[k]) for r in rs)
    print(f"{tag:6s} median of {len(rs)}: wall {med('wall'):.2f}s (CPU {med('cpu'):.2f}s): load+I/O "
          f"{med('load_wall'):.2f}s, forward {med('forward_wall'):.2f}s (CPU {med('forward_cpu'):.2f}s), "
          f"fits {med('fit_wall'):.2f}s (CPU {med('fit_cpu'):.2f}s)")
EOF
echo "numbers: $OUT/runs.tsv"
