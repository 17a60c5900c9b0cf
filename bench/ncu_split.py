# ncu_split.py CSV — the kernels of one profiled training step (bench/gpu_kernels.sh: ncu's
# --csv output of gpu__time_duration.sum) grouped by kernel name (GEMMs by name and grid): launches,
# ms, share, us per launch; the largest first.
import collections, csv, re, sys

rows = list(csv.reader(open(sys.argv[1], newline="")))
try:
    hi = next(i for i, r in enumerate(rows) if "Kernel Name" in r and "Metric Value" in r)
except StopIteration:
    sys.exit(f"{sys.argv[1]}: no ncu CSV table (a header with 'Kernel Name' and 'Metric Value')")
h = rows[hi]
K, G, U, V = (h.index(c) for c in ("Kernel Name", "Grid Size", "Metric Unit", "Metric Value"))
to_us = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
         "second": 1e6, "s": 1e6}
agg = collections.defaultdict(lambda: [0, 0.0])
for r in rows[hi + 1:]:
    if len(r) <= V or not r[V]:
        continue
    name = re.sub(r"[(<].*", "", r[K])[:64]
    gemm = any(w in r[K] for w in ("gemm", "xmma", "cutlass", "sm90_"))
    key = name + (f" grid {r[G]}" if gemm else "")
    a = agg[key]
    a[0] += 1
    a[1] += float(r[V].replace(",", "")) * to_us.get(r[U], 1.0)
total = sum(a[1] for a in agg.values())
print(f"{sum(a[0] for a in agg.values())} kernels, {total / 1000:.2f} ms (each timed alone)")
for key, (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:60]:
    print(f"{us / 1000:8.3f} ms {100 * us / total:5.1f}% {n:5d} x {us / n:8.1f} us  {key}")
