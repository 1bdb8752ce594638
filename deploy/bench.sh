#!/usr/bin/env bash
# Threads and speed inside the image under a CPU limit: for each --cpus value, the
# thread count `--threads auto` picks there (from the cgroup quota) and `sarai-llama
# bench` (llama-bench's method) at that count and at the host's core count (what a
# server sized from the host's cores would run in the same container).
# Usage: deploy/bench.sh MODEL.gguf [IMAGE] [CPUS...]   (default: zero-compile image, cpus 1 2)
set -euo pipefail
model=$(realpath "${1:?usage: deploy/bench.sh MODEL.gguf [IMAGE] [CPUS...]}")
image=${2:-localhost/sarai-llama:zero-compile}
shift $(( $# >= 2 ? 2 : 1 ))
cpus_list=("$@")
[ ${#cpus_list[@]} -gt 0 ] || cpus_list=(1 2)
host=$(nproc --all)
for cpus in "${cpus_list[@]}"; do
  run=(podman run --rm --network none --read-only --cpus "$cpus" -v "$model:/models/model.gguf:ro"
       --entrypoint sarai-llama "$image")
  auto=$("${run[@]}" info --json | python3 -c 'import json, sys; t = json.load(sys.stdin)["threads"]; print(t["value"])')
  echo "## --cpus $cpus: threads auto = $auto; host cores = $host"
  "${run[@]}" bench /models/model.gguf -p 64 -n 32 -r 3 -t "$(printf '%s\n' "$auto" "$host" | sort -nu | paste -sd,)"
done
