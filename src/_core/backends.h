// Loading ggml's CPU backend. The portable build ships it as several modules,
// one per ISA level, in <package>/lib; ggml only searches next to the
// executable and the current directory, so we choose and load one here before
// llama.cpp's own init (which loads nothing once a backend is registered).
#pragma once

#include <string>

namespace sarai {

struct BackendChoice {
    std::string variant;  // e.g. "zen4"; "static" in native builds
    int score = 0;
    std::string reason;
};

// Idempotent: the first call chooses, loads and initialises llama.cpp; later
// calls return the same choice. Throws InvalidArgument for a forced variant
// that is not shipped (or on a native build), std::runtime_error otherwise.
BackendChoice init_backends(const std::string &libdir, const std::string &forced);

}  // namespace sarai
