#!/usr/bin/env bash
# --model org/name: the Hugging Face cache as huggingface_hub lays it out (HF_HUB_CACHE,
# HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub; refs/main → snapshots/<commit>/, files linked into
# ../../blobs/), and the download into it from tests/hub_server.py, a stand-in for the hub on
# 127.0.0.1 that serves the tiny fixture (resume after a dropped connection, 401 for a gated
# repo, 404). The id gives the same lens, tokenize and train output as the folder.
# usage: tests/cli/hub.sh ./tunelens
set -uo pipefail
BIN=$(realpath "${1:-./tunelens}")
source tests/check.sh
SRV=
trap '[ -n "$SRV" ] && kill $SRV 2>/dev/null; rm -rf "$TMP"' EXIT
TINY=tests/fixtures/tiny
COMMIT=0123456789abcdef0123456789abcdef01234567  # the server's
PROMPT="12 + 7 = "
unset HF_HUB_CACHE HUGGINGFACE_HUB_CACHE HF_HOME HF_TOKEN HF_ENDPOINT HF_HUB_OFFLINE TRANSFORMERS_OFFLINE
export XDG_CACHE_HOME="$TMP/xdg" HOME="$TMP/home"  # never the user's cache

start_server() {  # extra server flags...
  [ -n "$SRV" ] && kill $SRV 2>/dev/null && wait $SRV 2>/dev/null
  rm -f "$TMP/port"
  python3 tests/hub_server.py --root $TINY --repo org/tiny --gated org/gated --renamed org/old --token secret \
    --port-file "$TMP/port" --log "$TMP/server.log" "$@" &
  SRV=$!
  for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.05; done
  export HF_ENDPOINT="http://127.0.0.1:$(cat "$TMP/port")"
}
lens_of() {  # model: the lens JSON without the line naming the model
  "$BIN" lens --model "$1" --prompt "$PROMPT" --json - 2>/dev/null | grep -v '"model"'
}
same() {  # name, file a, file b
  if [ -s "$2" ] && cmp -s "$2" "$3"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails+1)); fi
}
lens_of $TINY >"$TMP/lens_folder.json"
"$BIN" tokenize --model $TINY --text "$PROMPT" --json >"$TMP/tok_folder.json" 2>/dev/null

# ---- 1. a cache laid out as huggingface_hub leaves it (what transformers / mlx-lm downloaded)
make_cache() {  # hub folder: models--org--tiny with blobs, snapshot links and refs/main
  local repo="$1/models--org--tiny"
  mkdir -p "$repo/blobs" "$repo/refs" "$repo/snapshots/$COMMIT"
  for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
    local h; h=$(sha256sum "$TINY/$f" | cut -c1-64)
    cp "$TINY/$f" "$repo/blobs/$h"
    ln -s "../../blobs/$h" "$repo/snapshots/$COMMIT/$f"
  done
  printf %s "$COMMIT" >"$repo/refs/main"
}
make_cache "$TMP/hubcache"
HF_HUB_CACHE="$TMP/hubcache" HF_HUB_OFFLINE=1 lens_of org/tiny >"$TMP/lens_cache.json"
same "HF_HUB_CACHE: lens on org/tiny = lens on the folder" "$TMP/lens_folder.json" "$TMP/lens_cache.json"
mkdir -p "$TMP/hfhome" && make_cache "$TMP/hfhome/hub"
HF_HOME="$TMP/hfhome" HF_HUB_OFFLINE=1 lens_of org/tiny >"$TMP/lens_home.json"
same "HF_HOME/hub: lens on org/tiny" "$TMP/lens_folder.json" "$TMP/lens_home.json"
make_cache "$TMP/xdg/huggingface/hub"
HF_HUB_OFFLINE=1 lens_of org/tiny >"$TMP/lens_xdg.json"
same "XDG_CACHE_HOME/huggingface/hub: lens on org/tiny" "$TMP/lens_folder.json" "$TMP/lens_xdg.json"
mkdir -p "$TMP/home/.cache" && mv "$TMP/xdg/huggingface" "$TMP/home/.cache/"
(unset XDG_CACHE_HOME; HF_HUB_OFFLINE=1 lens_of org/tiny) >"$TMP/lens_home2.json"
same "~/.cache/huggingface/hub: lens on org/tiny" "$TMP/lens_folder.json" "$TMP/lens_home2.json"
export HF_HUB_CACHE="$TMP/hubcache"
check "tokenize on an id" 0 '"ids":\[0,281' env HF_HUB_OFFLINE=1 "$BIN" tokenize --model org/tiny --text "$PROMPT" --json
check "generate on an id" 0 "." env HF_HUB_OFFLINE=1 "$BIN" generate --model org/tiny --prompt "$PROMPT" --max-tokens 2
check "fuse on an id" 0 "Wrote" env HF_HUB_OFFLINE=1 "$BIN" fuse --model org/tiny --adapter $TINY/mlx_adapter --out "$TMP/fused"
check "weight-diff on an id" 0 "\|dW\|/\|W\|" env HF_HUB_OFFLINE=1 "$BIN" weight-diff --model org/tiny --adapter $TINY/mlx_adapter
check "patch on an id" 0 "." env HF_HUB_OFFLINE=1 "$BIN" patch --model org/tiny --source "1 + 1 = " --target "2 + 2 = " --layer 1

# ---- 2. bad cache entries and offline misses
check "offline, not cached: names every place it looked" 1 "org/missing: not a file or folder here, and not in the Hugging Face cache \(.*hubcache, from HF_HUB_CACHE\): .*models--org--missing/refs/main is missing; offline" \
  env HF_HUB_OFFLINE=1 "$BIN" lens --model org/missing --prompt "$PROMPT"
check "TRANSFORMERS_OFFLINE=1 is offline too" 1 "offline" env TRANSFORMERS_OFFLINE=1 "$BIN" tokenize --model org/missing --text x
mkdir -p "$TMP/hubcache/models--org--bad/refs" && printf 'not-a-hash\n' >"$TMP/hubcache/models--org--bad/refs/main"
check "malformed refs/main" 1 "models--org--bad/refs/main: not a commit hash .*'not-a-hash" \
  env HF_HUB_OFFLINE=1 "$BIN" lens --model org/bad --prompt "$PROMPT"
cp -a "$TMP/hubcache/models--org--tiny" "$TMP/hubcache/models--org--nl" && printf '%s\n' "$COMMIT" >"$TMP/hubcache/models--org--nl/refs/main"
check "refs/main ending in a newline" 0 '"ids":\[0,281' env HF_HUB_OFFLINE=1 "$BIN" tokenize --model org/nl --text "$PROMPT" --json
mkdir -p "$TMP/hubcache/models--org--gone/refs" && printf %s "$COMMIT" >"$TMP/hubcache/models--org--gone/refs/main"
check "refs/main without its snapshot, offline" 1 "snapshots/$COMMIT is missing" \
  env HF_HUB_OFFLINE=1 "$BIN" tokenize --model org/gone --text x
check "a path that is no id is the loader's error" 1 "no/such/model" env HF_HUB_OFFLINE=1 "$BIN" tokenize --model no/such/model --text x
check "not an id by huggingface_hub's rules ('--'): the loader's error, no lookup" 1 "org/na--me: no such model file or folder" env HF_HUB_OFFLINE=1 "$BIN" tokenize --model org/na--me --text x

# ---- 3. download from the hub stand-in
export HF_HUB_CACHE="$TMP/dl"
start_server --drop 1  # the first GET of model.safetensors drops halfway: resumed in the run
check "download org/tiny (a drop resumed with Range)" 0 "Saved .*models--org--tiny/snapshots/$COMMIT" "$BIN" tokenize --model org/tiny --text "$PROMPT"
if grep -qE "GET /cdn/[0-9a-f]{64}/model.safetensors range=bytes=207356-" "$TMP/server.log"; then
  echo "ok   the dropped file resumed from byte 207356"; else echo "FAIL no Range request after the drop"; fails=$((fails+1)); fi
R="$TMP/dl/models--org--tiny"
[ "$(cat "$R/refs/main")" = "$COMMIT" ] && echo "ok   refs/main holds the commit" || { echo "FAIL refs/main"; fails=$((fails+1)); }
bad=0
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
  t=$(readlink "$R/snapshots/$COMMIT/$f")
  case "$t" in ../../blobs/*) ;; *) bad=1 ;; esac
  cmp -s "$R/snapshots/$COMMIT/$f" "$TINY/$f" || bad=1
done
h=$(sha256sum $TINY/model.safetensors | cut -c1-64)
[ -f "$R/blobs/$h" ] || bad=1   # an LFS file's blob is named by its X-Linked-Etag (sha256)
ls "$R/blobs" | grep -q incomplete && bad=1
[ -e "$R/snapshots/$COMMIT/.gitattributes" ] && bad=1   # not one of mlx-lm's allow_patterns
[ $bad -eq 0 ] && echo "ok   snapshot links into ../../blobs/<etag>, files whole, no .incomplete" || { echo "FAIL snapshot layout"; ls -lR "$R"; fails=$((fails+1)); }
lens_of org/tiny >"$TMP/lens_dl.json"
same "lens on the downloaded id = lens on the folder" "$TMP/lens_folder.json" "$TMP/lens_dl.json"
"$BIN" tokenize --model org/tiny --text "$PROMPT" --json >"$TMP/tok_dl.json" 2>/dev/null
same "tokenize on the downloaded id = on the folder" "$TMP/tok_folder.json" "$TMP/tok_dl.json"
n=$(wc -l <"$TMP/server.log")
check "a cached id makes no request" 0 "tokens" "$BIN" tokenize --model org/tiny --text x
[ "$(wc -l <"$TMP/server.log")" -eq "$n" ] && echo "ok   no request for a cached id" || { echo "FAIL requests for a cached id"; fails=$((fails+1)); }
"$BIN" data math --out "$TMP/data" --train 64 --valid 16 --test 16 >/dev/null 2>&1
TR=(train --num-layers -1 --train --data "$TMP/data" --iters 6 --batch-size 4 --steps-per-eval 6 --val-batches 2 --seed 3)
"$BIN" "${TR[@]}" --model $TINY --adapter-path "$TMP/ad1" 2>/dev/null | grep -oE "(Val|Train) loss [0-9.]+" >"$TMP/train_folder.txt"
"$BIN" "${TR[@]}" --model org/tiny --adapter-path "$TMP/ad2" 2>/dev/null | grep -oE "(Val|Train) loss [0-9.]+" >"$TMP/train_id.txt"
same "train on the downloaded id: the same losses as on the folder" "$TMP/train_folder.txt" "$TMP/train_id.txt"
cmp -s "$TMP/ad1/adapters.safetensors" "$TMP/ad2/adapters.safetensors" && echo "ok   train: the same adapter, bit for bit" || { echo "FAIL train adapters differ"; fails=$((fails+1)); }
grep -qE '"model":[[:space:]]*"org/tiny"' "$TMP/ad2/adapter_config.json" && echo "ok   adapter_config.json names the id" || { echo "FAIL adapter_config.json model"; fails=$((fails+1)); }

# ---- 4. resumed across runs: every try drops, the .incomplete stays; the next run resumes it
export HF_HUB_CACHE="$TMP/dl2"
start_server --drop 5
check "5 drops: fails, says how to resume" 1 "download of model.safetensors from .* failed \(run again to resume from .*\.incomplete\)" "$BIN" tokenize --model org/tiny --text x
ls "$TMP/dl2/models--org--tiny/blobs/" | grep -q '\.incomplete$' && echo "ok   the partial blob is kept" || { echo "FAIL no .incomplete"; fails=$((fails+1)); }
[ -e "$TMP/dl2/models--org--tiny/refs/main" ] && { echo "FAIL refs/main written for an incomplete snapshot"; fails=$((fails+1)); }
: >"$TMP/server.log"
start_server
check "the next run resumes and completes" 0 "Saved" "$BIN" tokenize --model org/tiny --text x
grep -qE "GET /cdn/[0-9a-f]{64}/model.safetensors range=bytes=[1-9][0-9]*-" "$TMP/server.log" && echo "ok   resumed with a Range" || { echo "FAIL not resumed"; cat "$TMP/server.log"; fails=$((fails+1)); }
cmp -s "$TMP/dl2/models--org--tiny/snapshots/$COMMIT/model.safetensors" $TINY/model.safetensors && echo "ok   the resumed file is whole" || { echo "FAIL resumed file differs"; fails=$((fails+1)); }

# two downloads of one model at once: huggingface_hub's blob locks keep them apart
export HF_HUB_CACHE="$TMP/dl3"
"$BIN" tokenize --model org/tiny --text x >"$TMP/p1.log" 2>&1 & p1=$!
"$BIN" tokenize --model org/tiny --text x >"$TMP/p2.log" 2>&1 & p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
h=$(sha256sum $TINY/model.safetensors | cut -c1-64)
if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && cmp -s "$TMP/dl3/models--org--tiny/blobs/$h" $TINY/model.safetensors \
   && [ -e "$TMP/dl3/.locks/models--org--tiny/$h.lock" ]; then
  echo "ok   two concurrent downloads: both succeed, one whole blob, locked in .locks/ as huggingface_hub does"
else echo "FAIL concurrent downloads ($r1, $r2)"; cat "$TMP/p1.log" "$TMP/p2.log"; fails=$((fails+1)); fi

# ---- 5. what the hub refuses
check "HTTP 404: no such model" 1 "org/nothing: no such model on http://127.0.0.1:[0-9]+ \(HTTP 404" "$BIN" tokenize --model org/nothing --text x
check "HTTP 401: gated, set HF_TOKEN" 1 "org/gated on .*HTTP 401: the model is gated or private .*set HF_TOKEN" "$BIN" lens --model org/gated --prompt x
check "HTTP 401 with a wrong HF_TOKEN" 1 "HF_TOKEN is set but was refused" env HF_TOKEN=wrong "$BIN" lens --model org/gated --prompt x
check "HF_TOKEN opens the gated model" 0 "Saved .*models--org--gated" env HF_TOKEN=secret "$BIN" tokenize --model org/gated --text x
grep -q "GET /api/models/org/gated/revision/main range=None auth=Bearer secret" "$TMP/server.log" && echo "ok   Authorization: Bearer sent to the hub" || { echo "FAIL no Authorization"; fails=$((fails+1)); }
grep -qE "GET /cdn/[0-9a-f]{64}/model.safetensors range=None auth=None" "$TMP/server.log" && ! grep -qE "GET /cdn/.*auth=Bearer" "$TMP/server.log" \
  && echo "ok   the token is not sent to the storage host a redirect points at" || { echo "FAIL token sent to the storage host"; fails=$((fails+1)); }
check "a renamed repo: relative redirects followed, cached under the name asked for" 0 "Saved .*models--org--old/snapshots/$COMMIT" "$BIN" tokenize --model org/old --text x
check "an unwritable cache" 1 "/dev/null.*(not a folder|Not a directory|Permission denied)" env HF_HUB_CACHE=/dev/null/hub "$BIN" tokenize --model org/tiny --text x
kill $SRV; wait $SRV 2>/dev/null; SRV=
check "no hub answering: says so and how to stay offline" 1 "cannot reach the hub for org/other .*HF_HUB_OFFLINE=1" "$BIN" tokenize --model org/other --text x

[ $fails -eq 0 ] && echo "hub tests passed" || { echo "$fails hub test(s) failed"; exit 1; }
