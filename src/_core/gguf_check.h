// GGUF headers read with ggml's own parser, without loading tensors, so that
// files which would make llama.cpp abort (a corrupt header, zero layers,
// duplicate vocabulary entries) are refused with an exception first.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace sarai {

// One metadata value: monostate for arrays (the vocabulary is not needed
// here), a byte string for GGUF strings (they need not be valid UTF-8).
struct GgufString {
    std::string bytes;
};
using GgufValue = std::variant<std::monostate, GgufString, int64_t, uint64_t, double, bool>;

struct GgufInfo {
    std::vector<std::pair<std::string, GgufValue>> meta;
    int64_t n_tensors = 0;
};

// Throws InvalidArgument when the file is not a readable GGUF.
GgufInfo inspect_gguf(const std::string &path);

// Whether the file holds a tensor named `name` (InvalidArgument when unreadable).
bool gguf_has_tensor(const std::string &path, const std::string &name);

// One tensor of a GGUF file as its header describes it.
struct GgufTensor {
    std::string name;
    std::string type;  // ggml's type name: "q4_K", "f32", ...
    uint64_t bytes = 0;
};

// The file's tensors in file order (InvalidArgument when unreadable).
std::vector<GgufTensor> gguf_tensors(const std::string &path);

// Throws InvalidArgument for the files on which llama.cpp would abort the
// process instead of failing. Every model load goes through here.
void validate_gguf(const std::string &path, bool vocab_only);

}  // namespace sarai
