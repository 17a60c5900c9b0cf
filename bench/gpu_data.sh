# gpu_data.sh — sourced by bench/gpu_check.sh and bench/bench_gpu.sh: the Llama-3.2-1B-shaped
# random model and the three training sets of the GPU benchmarks, made once per machine.
#   $MODEL  random bf16 weights (bench/make_random_llama.py) with the tokenizer in $TOK
#   $DATA/short  the experiment's arithmetic rows (~9 tokens; `tunelens data math`)
#   $DATA/long   64 problems a row, one per line (~527 tokens)
#   $DATA/8k     1024 problems a row (~8200 tokens)
# needs BIN (tunelens), TOK; sets MODEL and DATA unless given.
MODEL=${MODEL:-/tmp/tunelens-llama1b-random}
DATA=${DATA:-/tmp/tunelens-gpu-data}
[ -f "$MODEL/model.safetensors" ] || python3 bench/make_random_llama.py "$MODEL" "$TOK" >/dev/null
if [ ! -f "$DATA/8k/valid.jsonl" ]; then
    "$BIN" data math --out "$DATA/short" >/dev/null
    python3 - "$DATA" <<'PY'
import json, os, sys
d = sys.argv[1]
def rows(f): return [json.loads(l)["text"] for l in open(f"{d}/short/{f}.jsonl")]
train = rows("train")
for name, per, count in (("long", 64, None), ("8k", 1024, 3)):
    os.makedirs(f"{d}/{name}", exist_ok=True)
    for f in ("train", "valid", "test"):
        L = rows(f) if name == "long" else train
        if name == "long" and f != "train": L = L + train[:512]  # enough rows for a batch of 8
        out = [L[i:i + per] for i in range(0, len(L) - per + 1, per)][:count]
        with open(f"{d}/{name}/{f}.jsonl", "w") as o:
            for r in out: o.write(json.dumps({"text": "\n".join(r)}) + "\n")
PY
fi
