#!/usr/bin/env bash
# experiment -c/--config FILE.yaml: the flag table's keys (long names with '_'), the command
# line over the file, unknown keys and wrong types as errors naming file:line, and an id as
# --model. Each case stops before any training (a missing model, or --num-layers checked
# against the model's blocks), so nothing long runs.
# usage: tests/cli/experiment_config.sh ./tunelens
set -uo pipefail
BIN=$(realpath "${1:-./tunelens}")
source tests/check.sh
E=("$BIN" experiment --device cpu)
y() { printf "$2" >"$TMP/$1.yaml"; echo "$TMP/$1.yaml"; }

check "the file's model and out are used" 1 "$TMP/m1: no such model" "${E[@]}" -c "$(y a "model: $TMP/m1\nout: $TMP/o1\nquick: true\n")"
[ -d "$TMP/o1" ] && echo "ok   the file's out folder" || { echo "FAIL out from the file"; fails=$((fails+1)); }
check "the command line wins over the file" 1 "$TMP/m2: no such model" "${E[@]}" -c "$TMP/a.yaml" --model "$TMP/m2"
check "--config=FILE" 1 "$TMP/m1: no such model" "${E[@]}" --config="$TMP/a.yaml"
check "num_layers from the file counts as given: beyond the model is an error" 1 "--num-layers 99: .* has 4 layers" \
  "${E[@]}" -c "$(y b "model: tests/fixtures/tiny\nout: $TMP/o2\nnum_layers: 99\n")"
check "unknown key: file, line and key" 1 "c.yaml:2: unknown key 'bogus_key'" "${E[@]}" -c "$(y c "iters: 5\nbogus_key: 1\n")"
check "wrong type: file, line and key" 1 "d.yaml:1: iters: expects an integer .*got 'abc'" "${E[@]}" -c "$(y d "iters: abc\n")"
check "num_layers: 0 from the file" 2 "--num-layers must be -1 \(all\) or at least 1" "${E[@]}" -c "$(y e "num_layers: 0\n")"
check "a missing config file" 1 "$TMP/none.yaml: cannot open the config file" "${E[@]}" -c "$TMP/none.yaml"
check "-c without a value" 2 "needs a value" "${E[@]}" -c
check "YAML syntax error" 1 "f.yaml" "${E[@]}" -c "$(y f "iters: [1,\n")"
check "an id offline and not cached" 1 "org/none: not a file or folder here, and not in the Hugging Face cache" \
  env HF_HUB_OFFLINE=1 HF_HUB_CACHE="$TMP/hub" "${E[@]}" --model org/none --out "$TMP/o3"

[ $fails -eq 0 ] && echo "experiment config tests passed" || { echo "$fails experiment config test(s) failed"; exit 1; }
