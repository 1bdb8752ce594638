// Media (images) in a prompt, as the engine sees them: a run of positions whose
// embeddings come from a projector (vision.h) instead of the token embedding table.
// No mtmd here: the engine only decodes the embeddings it is given.
//
// In Request::prompt each such position holds a placeholder token: a negative
// number derived from the image's hash (SHA-256 of its bytes) and the position's
// index, never a vocabulary id. Prefix reuse and the state cache compare and key
// prompts by their tokens, so they reuse an image's cells exactly when the same
// image sits at the same place, and a different image never matches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "llama.h"

namespace sarai {

struct MediaSpan {
    size_t start = 0;         // index in the prompt of the image's first position
    size_t n_tokens = 0;      // positions it takes (one embedding each)
    bool non_causal = false;  // decoded whole in one batch with causal attention off (gemma3's images)
    std::string id;           // hex SHA-256 of the image's bytes
    std::shared_ptr<const std::vector<float>> embd;  // n_tokens * n_embd floats (llama_model_n_embd_inp)
};

// The placeholder token of position `i` of the image with hash `id` (< 0).
llama_token media_placeholder(const std::string &id, size_t i);
inline bool is_placeholder(llama_token t) { return t < 0; }

}  // namespace sarai
