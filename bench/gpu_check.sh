#!/bin/sh
# gpu_check.sh — on a CUDA machine, from a build carried in .gpucheck/ (tunelens,
# libtunelens_cuda.so, tests/test_cuda_ops [, test_model, test_train]; their libraries in
# .devlibs.tar.xz, made by bench/device_libs.sh): the CUDA op tests, then training steps on the Llama-3.2-1B shape at
# 8 x 9 and 8 x ~512 tokens (before: TF32 products and the materialised attention; after: the
# defaults), a per-op profile of the 8 x 512 LoRA step before and after, and the PyTorch+PEFT
# peer at both lengths. Builds nothing.
# usage: sh bench/gpu_check.sh [tests|bench|all]   (env: OUT=folder for logs, TOK=Llama 3
#        tokenizer folder, PEER=0 skips the peer)
WHAT=${1:-all}
OUT=${OUT:-/tmp/gpucheck}
TOK=${TOK:-.cache/llama3-tokenizer}
mkdir -p "$OUT"
[ -f .devlibs.tar.xz ] && tar xf .devlibs.tar.xz
export LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
GC=${GC:-.gpucheck}   # the carried build folder
export TUNELENS_CUDA_LIB=$PWD/$GC/libtunelens_cuda.so
BIN=$PWD/$GC/tunelens
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ "$WHAT" != bench ]; then
    ./$GC/tests/test_cuda_ops >"$OUT/cuda_ops.log" 2>&1
    rc=$?
    echo "test_cuda_ops rc=$rc"
    # a failing tensor-core attention must not be timed: the f32 kernels then
    if [ $rc != 0 ] && grep -q "FAILED.*test_attention" "$OUT/cuda_ops.log"; then
        export TUNELENS_CUDA_ATTENTION_F32=1; echo "(bench with TUNELENS_CUDA_ATTENTION_F32=1)"
    fi
    grep -E "FAILED|PASSED|largest|bench|peak|fail|error" "$OUT/cuda_ops.log"
    # the model-level tests' CUDA cases (transformers/PEFT references, trajectories, dropout and
    # checkpointing on the GPU), where the build carried them
    for t in test_model test_train; do
        [ -x $GC/tests/$t ] || continue
        ./$GC/tests/$t >"$OUT/$t.log" 2>&1
        echo "$t rc=$?"; grep -E "FAILED|PASSED|CUDA|cuda" "$OUT/$t.log" | head -20
    done
fi
[ "$WHAT" = tests ] && exit 0

MODEL=/tmp/tunelens-llama1b-random
[ -f "$MODEL/model.safetensors" ] || python3 bench/make_random_llama.py "$MODEL" "$TOK" >/dev/null
"$BIN" data math --out /tmp/gc-short >/dev/null
# ~512-token rows: 64 problems a row, one per line (as the measurement)
mkdir -p /tmp/gc-long
for f in train valid test; do
    python3 -c "
import json,sys
L=[json.loads(l)['text'] for l in open('/tmp/gc-short/$f.jsonl')]
if '$f' != 'train': L = L + [json.loads(l)['text'] for l in open('/tmp/gc-short/train.jsonl')][:512]
for i in range(0, len(L) - 63, 64): print(json.dumps({'text': '\n'.join(L[i:i+64])}))
" >/tmp/gc-long/$f.jsonl
done
# train MODE DATA ITERS [extra flags]: the last report line (it/s -> ms/step, peak memory)
train() {
    mode=$1 data=$2 iters=$3; shift 3
    lr=1e-4; [ "$mode" = full ] && lr=1e-5
    rm -rf /tmp/gc-ad
    "$BIN" train --model "$MODEL" --data "$data" --train --iters "$iters" --batch-size 8 \
        --num-layers 16 --fine-tune-type "$mode" --learning-rate $lr --steps-per-report "$((iters / 2))" \
        --steps-per-eval 1000000 --val-batches 1 --save-every 1000000 --device cuda \
        --adapter-path /tmp/gc-ad --quiet "$@" 2>&1 | grep -E "^Compute|Iter $iters: Train|rror"
}
echo "== before (TF32 products, materialised attention), LoRA 8x512"
TUNELENS_CUDA_PLAIN_ATTENTION=1 train lora /tmp/gc-long 20 --dtype tf32
echo "== after, LoRA 8x512 (defaults)"; train lora /tmp/gc-long 40
echo "== after, full 8x512"; train full /tmp/gc-long 40
echo "== after, LoRA 8x512 tf32 + fused attention"; train lora /tmp/gc-long 20 --dtype tf32
echo "== after, LoRA 8x512, attention in f32 (bf16 products)"
TUNELENS_CUDA_ATTENTION_F32=1 train lora /tmp/gc-long 20
echo "== after, LoRA 8x9"; train lora /tmp/gc-short 60
echo "== after, full 8x9"; train full /tmp/gc-short 60
# long context: one row of ~8192 tokens (1024 problems)
mkdir -p /tmp/gc-8k
for f in train valid test; do
    python3 -c "
import json
L=[json.loads(l)['text'] for l in open('/tmp/gc-short/train.jsonl')]
for i in range(0, 3 * 1024, 1024): print(json.dumps({'text': '\n'.join(L[i:i+1024])}))
" >/tmp/gc-8k/$f.jsonl
done
echo "== after, LoRA 1 x ~8192"
"$BIN" train --model "$MODEL" --data /tmp/gc-8k --train --iters 4 --batch-size 1 --num-layers 16 \
    --steps-per-report 2 --steps-per-eval 1000000 --val-batches 1 --save-every 1000000 \
    --device cuda --adapter-path /tmp/gc-ad8k --quiet --max-seq-length 9000 2>&1 | grep -E "Iter 4: Train|rror"
echo "== profile before, LoRA 8x512"
TUNELENS_CUDA_PROFILE=1 TUNELENS_CUDA_PLAIN_ATTENTION=1 "$BIN" train --model "$MODEL" --data /tmp/gc-long --train --iters 6 --batch-size 8 --num-layers 16 --steps-per-eval 1000000 --val-batches 1 --save-every 1000000 --device cuda --adapter-path /tmp/gc-ad2 --quiet --dtype tf32 >/dev/null 2>"$OUT/profile_before.txt"
TUNELENS_CUDA_PROFILE=1 "$BIN" train --model "$MODEL" --data /tmp/gc-long --train --iters 6 --batch-size 8 --num-layers 16 --steps-per-eval 1000000 --val-batches 1 --save-every 1000000 --device cuda --adapter-path /tmp/gc-ad3 --quiet >/dev/null 2>"$OUT/profile_after.txt"
head -14 "$OUT/profile_before.txt" "$OUT/profile_after.txt"
if [ "${PEER:-1}" != 0 ]; then
    echo "== peer 8x9";   T=9 ITERS=40 OUT="$OUT" python3 bench/peer_torch_gpu.py 2>&1 | grep -E "^lora|^full"
    echo "== peer 8x512"; T=512 ITERS=20 OUT="$OUT" python3 bench/peer_torch_gpu.py 2>&1 | grep -E "^lora|^full"
fi
