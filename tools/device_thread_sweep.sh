#!/usr/bin/env bash
# Thread sweep on a many-core machine, portable vs native, in one prepared run.
#   bash tools/device_thread_sweep.sh SDIST GGUF_WHEEL_DIR OUT_DIR
# Builds both modes from the sdist (no network, no ccache), writes a random-weight
# Q4_0 llama with tools/random_gguf.py, and runs `sarai-llama bench` at
# 1,2,4,8,12,16 threads for each build. Results: OUT_DIR/{portable,native}.json and .md.
set -euo pipefail
sdist=$1 wheels=$2 out=$3
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) PYTHONUNBUFFERED=1
work=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --target "$work/site" "$wheels"/*.whl
export PYTHONPATH="$work/site"
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
python3 "$src/tools/random_gguf.py" "$work/model.gguf" --n-embd 1024 --n-layer 16 --n-ff 4096 --quant Q4_0
lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Flags" | cut -c1-300 > "$out/lscpu.txt"
for build in portable native; do
  PYTHONPATH="$work/$build:$work/site" python3 -m sarai_llama info > "$out/$build-info.txt" 2>&1 || true
  PYTHONPATH="$work/$build:$work/site" python3 -m sarai_llama bench "$work/model.gguf" \
      -p 256 -n 64 -t 1,2,4,8,12,16 -r 2 -o json > "$out/$build.json"
  PYTHONPATH="$work/$build:$work/site" python3 -c "
import json, sys; from sarai_llama import bench
rows = json.load(open('$out/$build.json'))
print(bench.format_results([bench.BenchResult(**{k: v for k, v in r.items() if k != 'test'}) for r in rows], 'md'))
" | tee "$out/$build.md"
done
