// The engine's private per-sequence state, shared by engine.cpp (the batch
// loop) and the files that split its concepts off: engine_seq.cpp (manual
// access to one idle sequence), engine_prefix.cpp (prefix reuse),
// engine_state.cpp (the state cache) and engine_spec.cpp (speculation).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "engine.h"

namespace sarai {

// One llama.cpp sequence id and the request (if any) that runs on it.
struct Engine::Slot {
    llama_seq_id seq = 0;
    // Tokens whose KV is in the cache for this sequence, at positions
    // 0..size-1. It outlives the request: the next one may reuse a prefix.
    std::vector<llama_token> cache;

    bool busy = false;
    int64_t id = 0;
    Request req;
    std::unique_ptr<Sampler> sampler;
    uint64_t admit_order = 0;  // the order requests took a sequence in
    std::chrono::steady_clock::time_point admitted{};  // when (prefill_order: a prompt's wait)
    size_t prompt_done = 0;    // prompt tokens already in `cache`
    llama_token next = -1;     // sampled but not decoded yet (decoded by the next step)
    bool has_next = false;
    bool waiting = false;      // NEED_TOKEN sent, waiting for provide_token/sample_with
    std::vector<float> ext_logits;  // the raw logits a NEED_TOKEN refers to
    int32_t n_generated = 0;
    int32_t n_reused = 0;
    Utf8Stream utf8;
    // Speculation (engine_spec.cpp): this step's draft (decoded after `next`),
    // the record of this request's proposals, and its draft counters.
    std::vector<llama_token> draft;
    Acceptance acceptance;
    int32_t n_drafted = 0, n_draft_accepted = 0;
    // Set by cancel() from any thread; read by the abort callback during a decode.
    std::atomic<bool> cancel{false};

    bool prompting() const { return busy && prompt_done < req.prompt.size(); }
};

struct Engine::Pending {
    int64_t id = 0;
    Request req;
    std::unique_ptr<Sampler> sampler;
};

// How many leading tokens two token lists share.
inline size_t common_prefix(const std::vector<llama_token> &a, const std::vector<llama_token> &b) {
    const size_t n = std::min(a.size(), b.size());
    size_t i = 0;
    while (i < n && a[i] == b[i]) ++i;
    return i;
}

}  // namespace sarai
