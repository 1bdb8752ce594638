# OpenBLAS for the native build (blas=openblas|system|vendored).
#
# Resolution: blas=openblas takes the system OpenBLAS found by pkg-config
# (Debian: libopenblas-dev) when it shares ggml's threads (its OpenMP or serial
# flavour) and otherwise builds vendor/OpenBLAS; blas=system and blas=vendored
# force one source. Debian's default pthread flavour runs a second thread pool
# beside ggml's OpenMP threads: measured here at 2 threads it made pp512 3-4x
# slower (F16 0.27x, Q4_K_M 0.34x) where the OpenMP build made it faster. The vendored library is built here, at
# configure time, so that ggml's find_package(BLAS) sees it: BLAS only (no
# LAPACK, no Fortran, single precision only), static, DYNAMIC_ARCH off with OpenBLAS's own detection
# of the build CPU as TARGET (this is the native build), and USE_OPENMP=1 so it
# shares ggml's OpenMP runtime instead of starting a second thread pool.
#
# Sets SARAI_BLAS_SOURCE (system|vendored), SARAI_BLAS_VERSION and
# SARAI_BLAS_THREADING (openmp|pthread|serial|unknown) in the caller's scope.

# OpenBLAS 0.3.21 cannot detect CPUs newer than itself (e.g. Emerald Rapids)
# and then stops; name the TARGET from what the compiler enables for this CPU.
function(_sarai_openblas_target out)
  if(SARAI_OPENBLAS_TARGET)
    set(${out} "${SARAI_OPENBLAS_TARGET}" PARENT_SCOPE)
    return()
  endif()
  if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
    set(${out} "" PARENT_SCOPE)  # let OpenBLAS detect other architectures
    return()
  endif()
  execute_process(COMMAND "${CMAKE_C_COMPILER}" -march=native -dM -E -x c /dev/null
                  OUTPUT_VARIABLE macros ERROR_QUIET)
  if(macros MATCHES "__AVX512BF16__")
    set(target COOPERLAKE)
  elseif(macros MATCHES "__AVX512F__")
    set(target SKYLAKEX)
  elseif(macros MATCHES "__AVX2__")
    set(target HASWELL)
  elseif(macros MATCHES "__AVX__")
    set(target SANDYBRIDGE)
  elseif(macros MATCHES "__SSE4_2__")
    set(target NEHALEM)
  else()
    set(target PRESCOTT)
  endif()
  set(${out} ${target} PARENT_SCOPE)
endfunction()

function(_sarai_openblas_vendored)
  set(src "${CMAKE_CURRENT_SOURCE_DIR}/vendor/OpenBLAS")
  if(NOT EXISTS "${src}/Makefile")
    message(FATAL_ERROR "blas=${SARAI_BLAS}: vendor/OpenBLAS is empty; run `make vendor` (python tools/vendor.py)")
  endif()
  find_program(SARAI_MAKE NAMES gmake make REQUIRED)
  set(work "${CMAKE_BINARY_DIR}/openblas-src")
  set(prefix "${CMAKE_BINARY_DIR}/openblas-install")
  set(stamp "${prefix}/.sarai-built")
  _sarai_openblas_target(target)
  set(args "CC=${CMAKE_C_COMPILER}" USE_OPENMP=1 USE_THREAD=1 NUM_THREADS=256 NO_LAPACK=1 NO_LAPACKE=1
           NOFORTRAN=1 C_LAPACK=0 DYNAMIC_ARCH=0 NO_SHARED=1 NO_AFFINITY=1 NO_WARMUP=1
           # ggml calls cblas_sgemm only: single precision is all it needs (4x less to build).
           BUILD_SINGLE=1)
  if(target)
    list(APPEND args "TARGET=${target}")
  endif()
  if(NOT EXISTS "${stamp}")
    message(STATUS "Building vendored OpenBLAS (BLAS only, static, OpenMP, TARGET=${target}); "
                   "log: ${CMAKE_BINARY_DIR}/openblas-build.log")
    file(REMOVE_RECURSE "${work}" "${prefix}")
    # Build in a copy: vendor/ stays pristine and an interrupted build leaves no half state there.
    file(COPY "${src}/" DESTINATION "${work}")
    cmake_host_system_information(RESULT ncpu QUERY NUMBER_OF_LOGICAL_CORES)
    execute_process(
      COMMAND "${SARAI_MAKE}" -j${ncpu} ${args} libs
      WORKING_DIRECTORY "${work}" RESULT_VARIABLE rc
      OUTPUT_FILE "${CMAKE_BINARY_DIR}/openblas-build.log" ERROR_FILE "${CMAKE_BINARY_DIR}/openblas-build.err")
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "building vendored OpenBLAS failed (${rc}); see ${CMAKE_BINARY_DIR}/openblas-build.err")
    endif()
    execute_process(
      COMMAND "${SARAI_MAKE}" ${args} "PREFIX=${prefix}" install
      WORKING_DIRECTORY "${work}" RESULT_VARIABLE rc
      OUTPUT_FILE "${CMAKE_BINARY_DIR}/openblas-install.log" ERROR_FILE "${CMAKE_BINARY_DIR}/openblas-install.err")
    if(NOT rc EQUAL 0 OR NOT EXISTS "${prefix}/lib/libopenblas.a")
      message(FATAL_ERROR "installing vendored OpenBLAS failed; see ${CMAKE_BINARY_DIR}/openblas-install.err")
    endif()
    file(WRITE "${stamp}" "built\n")
  endif()
  find_package(OpenMP REQUIRED COMPONENTS C)
  # ggml-blas asks FindBLAS, which finds libopenblas.a through CMAKE_PREFIX_PATH;
  # its link (and ours) gets OpenMP from ggml's own OpenMP dependency.
  set(BLAS_INCLUDE_DIRS "${prefix}/include" CACHE PATH "" FORCE)
  set(BLA_STATIC ON PARENT_SCOPE)
  list(APPEND CMAKE_PREFIX_PATH "${prefix}")
  set(CMAKE_PREFIX_PATH "${CMAKE_PREFIX_PATH}" PARENT_SCOPE)
  # FindBLAS test-links sgemm_; a static OpenMP build needs -fopenmp for that.
  set(CMAKE_REQUIRED_LINK_OPTIONS ${OpenMP_C_FLAGS} PARENT_SCOPE)
  set(CMAKE_REQUIRED_LIBRARIES m pthread PARENT_SCOPE)
  set(SARAI_BLAS_SOURCE vendored PARENT_SCOPE)
  set(SARAI_BLAS_VERSION 0.3.21 PARENT_SCOPE)
  set(SARAI_BLAS_THREADING openmp PARENT_SCOPE)
  set(SARAI_BLAS_TARGET "${target}" PARENT_SCOPE)
endfunction()

macro(sarai_configure_openblas)
  sarai_set(GGML_BLAS ON)
  set(GGML_BLAS_VENDOR OpenBLAS CACHE STRING "set by sarai-llama" FORCE)
  set(SARAI_BLAS_SOURCE "")
  if(SARAI_BLAS STREQUAL "openblas" OR SARAI_BLAS STREQUAL "system")
    find_package(PkgConfig QUIET)
    if(PkgConfig_FOUND)
      pkg_check_modules(SARAI_SYSTEM_OPENBLAS QUIET openblas)
    endif()
    if(SARAI_SYSTEM_OPENBLAS_FOUND AND SARAI_BLAS STREQUAL "openblas"
       AND SARAI_SYSTEM_OPENBLAS_LIBRARY_DIRS MATCHES "openblas-pthread")
      message(STATUS "sarai-llama: system OpenBLAS is the pthread flavour (a second thread pool "
                     "beside ggml's OpenMP); building vendor/OpenBLAS with OpenMP instead "
                     "(blas=system forces the system one)")
    elseif(SARAI_SYSTEM_OPENBLAS_FOUND)
      set(SARAI_BLAS_SOURCE system)
      set(SARAI_BLAS_VERSION "${SARAI_SYSTEM_OPENBLAS_VERSION}")
      # Debian ships one OpenBLAS per threading model, each in its own directory.
      if(SARAI_SYSTEM_OPENBLAS_LIBRARY_DIRS MATCHES "openblas-openmp")
        set(SARAI_BLAS_THREADING openmp)
      elseif(SARAI_SYSTEM_OPENBLAS_LIBRARY_DIRS MATCHES "openblas-pthread")
        set(SARAI_BLAS_THREADING pthread)
      elseif(SARAI_SYSTEM_OPENBLAS_LIBRARY_DIRS MATCHES "openblas-serial")
        set(SARAI_BLAS_THREADING serial)
      else()
        set(SARAI_BLAS_THREADING unknown)
      endif()
      set(BLAS_INCLUDE_DIRS "${SARAI_SYSTEM_OPENBLAS_INCLUDE_DIRS}" CACHE PATH "" FORCE)
      list(PREPEND CMAKE_PREFIX_PATH ${SARAI_SYSTEM_OPENBLAS_LIBRARY_DIRS})
    elseif(SARAI_BLAS STREQUAL "system")
      message(FATAL_ERROR "blas=system: no OpenBLAS found by pkg-config "
                          "(Debian/Ubuntu: apt-get install libopenblas-dev pkg-config), or use blas=vendored")
    endif()
  endif()
  if(NOT SARAI_BLAS_SOURCE)
    _sarai_openblas_vendored()
  endif()
  message(STATUS "sarai-llama: OpenBLAS ${SARAI_BLAS_VERSION} (${SARAI_BLAS_SOURCE}, ${SARAI_BLAS_THREADING} threads)")
endmacro()
