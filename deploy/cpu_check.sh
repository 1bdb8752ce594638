#!/usr/bin/env bash
# Would this image's server start on a node with CPU model X? Runs the image's own
# Python and sarai-llama (its root filesystem, mounted) under qemu-user emulating X and
# prints what the pod would log at start: the import that `sarai-llama serve` does
# first, then `sarai-llama info` (default) or the given arguments. A native image
# built for a newer CPU stops with BuildMismatchError and exit status 1.
# Usage: deploy/cpu_check.sh IMAGE QEMU_CPU_MODEL [sarai-llama args...]
#   e.g. deploy/cpu_check.sh localhost/sarai-llama:native-blas Haswell
#   (qemu-x86_64 -cpu help lists the models; needs root for `podman image mount`
#    and the qemu-user package: make system-deps)
set -euo pipefail
image=${1:?usage: deploy/cpu_check.sh IMAGE QEMU_CPU_MODEL}
model=${2:?usage: deploy/cpu_check.sh IMAGE QEMU_CPU_MODEL}
shift 2
root=$(podman image mount "$image")
trap 'podman image unmount "$image" >/dev/null' EXIT
py=$(basename "$(readlink -f "$root/opt/sarai/bin/python")")
site=$(cd "$root" && echo opt/sarai/lib/python3*/site-packages)
# qemu -L makes the image's files win over the host's for every absolute path.
set +e
env -i PATH=/usr/bin:/bin PYTHONPATH="/$site" \
  qemu-x86_64 -cpu "$model" -L "$root" "$root/usr/bin/$py" -m sarai_llama "${@:-info}" 2>&1 \
  | grep -v "TCG doesn't support requested feature"
rc=${PIPESTATUS[0]}
set -e
echo "exit status under $model: $rc"
