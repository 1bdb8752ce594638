#!/usr/bin/env bash
# Build a sarai-llama server image offline: `make image` (zero-compile) and
# `make image-native` (native-blas) call this. Steps, each skipped when its
# result is already there:
#   1. podman set up (tools/podman_setup.sh);
#   2. the base image localhost/sarai-llama-base:<suite>, a Debian minbase made by
#      mmdebstrap from Debian packages and `podman import`ed (no registry needed);
#   3. the sarai-llama wheel for $PYTHON's version: zero-compile takes the manylinux wheel
#      that `make wheel` makes and users install (tools/wheels.py); native-blas builds one on
#      the host into build/deploy/wheels/native-blas-<source hash>/; both are reused while
#      the sources are unchanged (a build takes minutes on a small machine);
#   4. its dependencies as wheels for the image's Python (pip download on the host:
#      containers here may have no working network or TLS);
#   5. podman build --network none.
# Usage: deploy/build.sh zero-compile|native-blas   (env: PYTHON, SUITE, TAG)
set -euo pipefail
cd "$(dirname "$0")/.."

flavor=${1:?usage: deploy/build.sh zero-compile|native-blas}
PYTHON=${PYTHON:-python3}
# The image's Python (Debian's) must be the host's: the wheel is compiled for it. Bookworm
# (3.11) unless the host's Python is trixie's (3.13); SUITE= overrides.
host_py=$($PYTHON -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$host_py" in 3.13) default_suite=trixie ;; *) default_suite=bookworm ;; esac
SUITE=${SUITE:-$default_suite}
# The native image targets one CPU family: -march=native of the machine that builds
# it (the build records that CPU's instruction set and the import guard checks it).
# Build it on a node of the pool it will run on, or on a machine with the same CPU.
case "$flavor" in
  zero-compile) settings=() ;;
  native-blas) settings=(--config-settings=native=true --config-settings=blas=vendored) ;;
  *) echo "unknown flavor $flavor: zero-compile or native-blas" >&2; exit 2 ;;
esac
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/sarai_llama/_version.py)
TAG=${TAG:-localhost/sarai-llama:$flavor}

bash tools/podman_setup.sh >/dev/null

# ---- 2. base image: Debian's python3 is the image's Python; the wheel must match it.
# libgomp1: the native-blas build uses OpenMP (the zero-compile wheel needs nothing but glibc).
base_tag=$(bash tools/debian_image.sh base "$SUITE" python3 tini libgomp1 libstdc++6 passwd)  # passwd: useradd
image_py=$(podman run --rm --network none "$base_tag" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$image_py" != "$host_py" ]; then
  echo "the image's Python is $image_py (Debian $SUITE) but PYTHON=$PYTHON is $host_py:" \
       "the compiled wheel must match; use PYTHON=python$image_py or SUITE=<the Debian release with $host_py>" >&2
  exit 1
fi

# ---- 3. the sarai-llama wheel, cached by the hash of everything that goes into it.
# Compiled files copied into src/ (a development shortcut) would be packed into the wheel
# beside the fresh build's and could shadow them: refuse rather than ship them.
stray=$(git ls-files -o -- src/sarai_llama | grep -E '\.so$|/build_info\.json$' || true)
if [ -n "$stray" ]; then
  echo "these untracked build outputs in src/ would go into the image's wheel; remove them first:" >&2
  echo "$stray" >&2
  exit 1
fi
if [ "$flavor" = zero-compile ]; then
  wheels=build/deploy/wheels/$flavor
  $PYTHON tools/deps.py sdist wheel
  $PYTHON tools/vendor.py
  rm -rf "$wheels" && mkdir -p "$wheels"
  $PYTHON tools/wheels.py build --python "$PYTHON" --out "$wheels"
else
  wheels=build/deploy/wheels/$flavor-$($PYTHON tools/wheels.py hash "$flavor ${settings[*]-}")
  if ! ls "$wheels"/sarai_llama-*.whl >/dev/null 2>&1; then
    echo "[image] building the $flavor wheel into $wheels (sources changed or first build)"
    t0=$SECONDS
    $PYTHON tools/deps.py build
    $PYTHON tools/vendor.py
    rm -rf "$wheels.tmp" && mkdir -p "$wheels.tmp"
    $PYTHON -m pip wheel --no-build-isolation --no-deps --no-cache-dir ${settings[@]+"${settings[@]}"} -w "$wheels.tmp" .
    rm -rf "$wheels" && mv "$wheels.tmp" "$wheels"
    echo "[image] wheel built in $((SECONDS - t0)) s"
  fi
fi

# ---- 4. dependencies for the image's Python, as binary wheels only.
deps=build/deploy/deps-cp${image_py/./}
reqs=$($PYTHON - <<'PY'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["server"]))
PY
)
if [ ! -f "$deps/.complete" ] || [ "$(cat "$deps/.complete")" != "$(echo "$reqs" | sha256sum)" ]; then
  echo "[image] downloading dependency wheels for Python $image_py into $deps"
  rm -rf "$deps" && mkdir -p "$deps"
  # A requirements file, not words on the command line: requirements may carry
  # environment markers with spaces ("uvloop>=0.19; sys_platform != 'win32'").
  echo "$reqs" >"$deps.requirements.txt"
  $PYTHON -m pip download --quiet --only-binary=:all: --python-version "$image_py" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --dest "$deps" pip -r "$deps.requirements.txt"
  echo "$reqs" | sha256sum >"$deps/.complete"
fi

# ---- 5. build context: the wheels only (no sources, no models).
ctx=build/deploy/context-$flavor
rm -rf "$ctx" && mkdir -p "$ctx/wheels"
cp "$wheels"/sarai_llama-*.whl "$ctx/wheels/"
cp "$deps"/*.whl "$ctx/wheels/"
mv "$ctx"/wheels/pip-*.whl "$ctx/wheels/pip.whl"
echo "[image] podman build $TAG"
t0=$SECONDS
podman build --network none --format docker --quiet -f deploy/Containerfile --build-arg BASE="$base_tag" \
  --build-arg FLAVOR="$flavor" --build-arg VERSION="$version" \
  -t "$TAG" -t "localhost/sarai-llama:$version-$flavor" "$ctx" >/dev/null
echo "[image] $TAG built in $((SECONDS - t0)) s: $(podman image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')"
# The install stage's image and the image this build replaced keep no tag: remove such
# leftovers of ours (each build of an image would otherwise leave 300 to 600 MB on the disk).
podman image prune -f --filter "label=org.opencontainers.image.title=sarai-llama" >/dev/null
