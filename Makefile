# One obvious command per job; README.md documents each. Builds are incremental
# (persistent build/ directory, ccache) and reuse the current Python environment.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
BLAS ?= none
MODEL ?=
PROMPT ?= The Eiffel Tower is located in the city of
THREADS ?= 1,2
FUZZ_SECONDS ?= 60
# make install-fast: where to look for a zero-compile wheel (make wheel writes dist/), or an index.
WHEELHOUSE ?= dist
INDEX_URL ?=
# make wheel: the CPythons to build for (X.Y or paths); empty: every supported one this machine has.
PYTHONS ?=
# ccache keys on paths relative to the checkout, so an sdist build elsewhere hits the same cache.
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_DIR ?= $(HOME)/.cache/ccache
export CCACHE_MAXSIZE ?= 5G

.PHONY: help build-deps deps build-tools system-deps vendor clean-vendor install install-fast install-source install-optimized \
        wheel show-llama-build \
        clean-llama-build demo test test-fast lcp-suite fuzz bench-llama-native sdist clean \
        image image-native k8s-validate

help:
	@echo "make demo               set up everything and generate text with Gemma 3 270M"
	@echo "make test               build (native) and run the whole test suite (fuzzers included, briefly)"
	@echo "make fuzz               run every fuzz harness for FUZZ_SECONDS each [60]"
	@echo "make lcp-suite          run llama-cpp-python's own tests against the installed sarai_llama"
	@echo "make install            = install-fast: the portable build (runs on any x86-64 CPU)"
	@echo "make install-fast       zero-compile: a wheel from WHEELHOUSE [dist] or INDEX_URL, else builds from source"
	@echo "make wheel              the manylinux wheels (cibuildwheel, podman), one per CPython here [PYTHONS=3.11 ...], into dist/"
	@echo "make install-optimized  the native build for this CPU (-march=native, LTO) [BLAS=none]"
	@echo "make show-llama-build   print the installed build's metadata"
	@echo "make clean-llama-build  remove the native build and reinstall the portable one"
	@echo "make bench-llama-native benchmark the installed build [MODEL=path; BUILDS=\"name=wheel|dir|installed ...\": the design's table]"
	@echo "make vendor             fill vendor/ with the pinned sources (offline capable)"
	@echo "make deps               the Python packages for building and testing (only what is missing)"
	@echo "make build-tools        the Debian packages a build uses (g++, ccache)"
	@echo "make system-deps        the Debian packages the whole test suite uses (qemu-user, OpenBLAS, podman, ...)"
	@echo "make clean-vendor       empty vendor/ again (make vendor refills it from the cache)"
	@echo "make image              the zero-compile server image (podman, offline; README \"Deploy\")"
	@echo "make image-native       the native-blas server image, for this machine's CPU"
	@echo "make k8s-validate       render deploy/k8s (base, overlays) and validate it offline"

# Python packages, as pyproject.toml declares them; only what is missing is installed,
# so every build target can depend on these and stay incremental.
build-deps:
	@$(PYTHON) tools/deps.py build

deps:
	@$(PYTHON) tools/deps.py build test deploy fuzz wheel

# Debian packages: installed as root (or with sudo), else the command is printed and the
# tests that need them skip. build-tools: the compiler and ccache, before the first build,
# so that every later build (make test after make demo) reuses its objects.
build-tools:
	@bash tools/system_deps.sh build

# The whole suite's: qemu-user, binutils, OpenBLAS, ..., and podman for the image tests.
system-deps:
	@bash tools/system_deps.sh
	@bash tools/podman_setup.sh || echo "podman is not set up: the image tests will be skipped"

vendor:
	$(PYTHON) tools/vendor.py

# Back to what a fresh clone has (empty submodule folders); the download cache stays.
clean-vendor:
	$(PYTHON) tools/vendor.py --clean

install: install-fast

# Zero-compile: the wheel from INDEX_URL, or the one in WHEELHOUSE that this Python can install
# (seconds); the portable build from source only when there is none (minutes, needs g++).
install-fast:
	@if [ -n "$(INDEX_URL)" ]; then \
	  echo "zero-compile: sarai-llama's wheel from $(INDEX_URL)"; \
	  $(PIP) install --only-binary=sarai-llama --index-url "$(INDEX_URL)" sarai-llama; \
	elif whl=$$($(PYTHON) tools/wheels.py find "$(WHEELHOUSE)"); then \
	  echo "zero-compile: installing $$whl"; \
	  $(PIP) uninstall -q -y sarai-llama 2>/dev/null; $(PIP) install --no-cache-dir "$$whl"; \
	else \
	  echo "no wheel in $(WHEELHOUSE)/ fits this Python: building from source instead (minutes, needs g++; make wheel makes the wheels)"; \
	  $(MAKE) --no-print-directory install-source; \
	fi

install-source: build-deps vendor
	$(PIP) install --no-build-isolation --no-cache-dir -v .

# The zero-compile wheels: cibuildwheel with pyproject.toml's [tool.cibuildwheel], as the release
# workflow, with podman and a local image (tools/wheels.py, tools/wheel_image.py), offline.
wheel: vendor
	@$(PYTHON) tools/deps.py sdist wheel
	@bash tools/podman_setup.sh >/dev/null
	$(PYTHON) tools/wheels.py build $(foreach p,$(PYTHONS),--python $(p))

install-optimized: build-deps vendor
	$(PIP) install --no-build-isolation --no-cache-dir -v --config-settings=native=true --config-settings=blas=$(BLAS) .

show-llama-build:
	$(PYTHON) -m sarai_llama info

clean-llama-build:
	rm -rf build/*-native
	$(PIP) uninstall -y sarai-llama
	$(MAKE) install-fast

demo: build-tools deps install-optimized
	$(PYTHON) -m sarai_llama run $(if $(MODEL),$(MODEL)) "$(PROMPT)" --max-tokens 48 --temperature 0

test: deps system-deps install-optimized
	SARAI_EXPECT_BUILD=native $(PYTHON) -m pytest -v --durations=25
	$(MAKE) lcp-suite

# llama-cpp-python 0.3.36's own tests against sarai_llama (tools/lcp_suite.py; allow-list beside it).
lcp-suite: vendor
	$(PYTHON) tools/lcp_suite.py

test-fast:
	$(PYTHON) -m pytest -m "not slow"

# Each harness in its own process; a crash input is printed and kept under build/fuzz/artifacts.
fuzz:
	@$(PYTHON) tools/deps.py fuzz
	$(PYTHON) fuzz/run.py --seconds $(FUZZ_SECONDS)

# BUILDS="zero-compile=WHEEL native=installed native+openblas=DIR": the design's table
# (tools/bench_builds.py: the builds interleaved, ratios, the roofline, a PNG); without: llama-bench's.
bench-llama-native:
ifneq ($(BUILDS),)
	$(PYTHON) tools/bench_builds.py $(MODEL) $(foreach b,$(BUILDS),--build $(b)) --plot build/bench-builds.png
else
	$(PYTHON) -m sarai_llama bench $(if $(MODEL),$(MODEL)) -p 512 -n 128 -t $(THREADS)
endif

sdist: vendor
	@$(PYTHON) tools/deps.py sdist
	$(PYTHON) -m build --sdist --no-isolation --outdir dist .

# Server images (deploy/build.sh: podman set up, local Debian base, wheel cached under
# build/deploy/, offline podman build) and the Kubernetes manifests' offline check.
image:
	PYTHON=$(PYTHON) bash deploy/build.sh zero-compile

image-native:
	PYTHON=$(PYTHON) bash deploy/build.sh native-blas

k8s-validate:
	@$(PYTHON) tools/deps.py deploy
	$(PYTHON) tools/k8s_validate.py

clean:
	rm -rf build dist
