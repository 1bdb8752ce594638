#!/usr/bin/env bash
# Thread sweep on a many-core machine, portable vs native, in one prepared run.
#   bash tools/device_thread_sweep.sh SDIST GGUF_WHEEL_DIR OUT_DIR
# Builds both modes from the sdist (no network, no ccache), writes a random-weight
# Q4_0 llama with tools/random_gguf.py, and runs `sarai-llama bench` at
# 1,2,4,8,12,16 threads for each build. Results: OUT_DIR/{portable,native}.json and .md.
set -euo pipefail
sdist=$1 wheels=$2 out=$3
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) PYTHONUNBUFFERED=1
# WORK=<dir of an earlier run on the same machine> reuses its builds and model.
work=${WORK:-$(mktemp -d)}
if [ ! -f "$work/model.gguf" ]; then
  python3 -m pip install -q --no-index --no-deps --target "$work/site" "$wheels"/*.whl
  tar xzf "$sdist" -C "$work"
  src=$(echo "$work"/sarai_llama-*/)
  start=$(date +%s)
  python3 -m pip wheel -q --no-deps --no-build-isolation -w "$work/wp" "$src"
  echo "portable build: $(( $(date +%s) - start )) s on $(nproc) cores"
  start=$(date +%s)
  SARAI_NATIVE=1 python3 -m pip wheel -q --no-deps --no-build-isolation -w "$work/wn" "$src"
  echo "native build: $(( $(date +%s) - start )) s"
  python3 -m pip install -q --no-deps --target "$work/portable" "$work"/wp/*.whl
  python3 -m pip install -q --no-deps --target "$work/native" "$work"/wn/*.whl
  PYTHONPATH="$work/site" python3 "$src/tools/random_gguf.py" "$work/model.gguf" --n-embd 1024 --n-layer 16 --n-ff 4096 --quant Q4_0
fi
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Flags" | cut -c1-300 > "$out/lscpu.txt"
PYTHONPATH="$work/native:$work/site" python3 -X faulthandler -c "
import sys, sarai_llama as s
llm = s.Llama(sys.argv[1], n_ctx=128, n_threads=4, verbose=False)
print('smoke:', llm('the', max_tokens=4, temperature=0)['usage'])
" "$work/model.gguf"
# One bench process per (build, threads): a crash loses one row, not the sweep.
for build in native portable; do
  PYTHONPATH="$work/$build:$work/site" python3 -m sarai_llama info > "$out/$build-info.txt" 2>&1 || true
  for t in 1 2 4 8 12 16; do
    PYTHONPATH="$work/$build:$work/site" python3 -X faulthandler -m sarai_llama bench "$work/model.gguf" \
        -p 256 -n 64 -t "$t" -r 2 -o json > "$work/r.json" || { echo "bench $build t=$t failed: $?"; continue; }
    python3 -c "import json,sys; [print(json.dumps(r)) for r in json.load(open(sys.argv[1]))]" "$work/r.json" >> "$out/results.jsonl"
    python3 -c "
import json,sys
for r in json.load(open(sys.argv[1])):
    test = 'pp%d' % r['n_prompt'] if r['n_prompt'] else 'tg%d' % r['n_gen']
    print('$build', r['cpu_variant'], r['n_threads'], test, '%.2f +- %.2f' % (r['avg_ts'], r['stddev_ts']))
" "$work/r.json"
  done
done
