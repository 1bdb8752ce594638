#!/usr/bin/env bash
# The Debian/Ubuntu packages that the build and the whole test suite use, in one
# list (`make system-deps`; .ci/run calls it too). Installs what is missing
# when it can (root, or passwordless sudo); otherwise prints the one command
# to run and exits 0, so that `make test` still runs everything else and its
# summary names the tests that could not run.
#   bash tools/system_deps.sh         # everything the suite uses
#   bash tools/system_deps.sh build   # only what a build uses (make demo): the compiler and
#                                     # ccache, so that the first build already fills the cache
#                                     # and the next (make test) reuses it
set -euo pipefail

# what to look for | Debian package | why the suite needs it
build_checks=(
  "cmd:ccache|ccache|fast rebuilds"
  "cmd:g++|g++|the compiler"
  "cmd:make|make|the Makefile"
)
checks=(
  "${build_checks[@]}"
  "cmd:git|git|vendor checks"
  "cmd:objdump|binutils|static ISA check of the portable wheel"
  "cmd:qemu-x86_64|qemu-user|the portable wheel run on emulated older CPUs"
  "cmd:taskset|util-linux|affinity test"
  "cmd:pkg-config|pkg-config|system OpenBLAS lookup"
  "file:/usr/include/x86_64-linux-gnu/cblas.h:/usr/include/cblas.h|libopenblas-dev|blas=system build test"
)

case "${1:-all}" in
  build) checks=("${build_checks[@]}") ;;
  all) ;;
  *) echo "usage: $0 [build|all]" >&2; exit 2 ;;
esac

need=()
for entry in "${checks[@]}"; do
  IFS='|' read -r what pkg _why <<<"$entry"
  case "$what" in
    cmd:*) command -v "${what#cmd:}" >/dev/null 2>&1 && continue ;;
    file:*)
      found=0
      IFS=':' read -r -a files <<<"${what#file:}"
      for f in "${files[@]}"; do [ -e "$f" ] && found=1; done
      [ "$found" = 1 ] && continue ;;
  esac
  need+=("$pkg")
done

if [ ${#need[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system packages missing: ${need[*]} (install them with your package manager; the tests that need them are skipped)"
  exit 0
fi
. "$(dirname "$0")/root_prefix.sh"
if ! root_prefix; then
  echo "system packages missing: ${need[*]}"
  echo "  the tests that need them will be skipped; to run them: sudo make system-deps"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q "${need[@]}"
