// The engine's side of the state cache (state_cache.h): a free sequence about
// to be taken by another request leaves its KV state in the cache (stash), and
// a request restores the longest cached prefix of its prompt into its sequence
// when that beats what the live sequences give (restore). Called from
// choose_prefix (engine.cpp) with the engine's lock held, on the driving thread.
#include <algorithm>

#include "engine.h"
#include "engine_slot.h"

namespace sarai {

namespace {

// The fewest tokens worth saving or restoring. tools/bench_state_cache.py on
// Gemma 3 270M Q4_K_M (2 cores, 18 KiB of state per token): restoring took
// 0.16-0.66 ms for 4-128 tokens and 2-5 ms for 256-512, prefill never less than a
// few ms per token, so restoring wins at every length measured (down to 4). The
// floor is for what restore does not show: the save runs whenever a sequence is
// taken, used later or not, and a history under 16 tokens costs under ~50 ms
// to prefill again.
constexpr size_t kMinStateTokens = 16;

}  // namespace

void Engine::set_state_cache(std::shared_ptr<StateCache> cache) {
    std::lock_guard<std::mutex> lock(mu_);
    cache_ = std::move(cache);
}

std::shared_ptr<StateCache> Engine::state_cache() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cache_;
}

void Engine::keep_idle_states() {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto &s : slots_)
        if (!s->busy) stash(*s);
}

uint32_t Engine::serves_from(const Slot &slot) const {
    const auto n = (llama_pos)slot.cache.size();
    if (n == 0 || llama_memory_seq_pos_max(mem_, slot.seq) != n - 1) return 0;  // the cells do not hold these tokens
    // A sliding-window cache keeps the positions from pos_min on (the window of
    // its last token at least), and a prefix of c tokens needs those the next
    // token at position c attends to: c - n_swa + 1 and later (llama.cpp masks p0
    // when p1 - p0 >= n_swa; a chunked window needs fewer). A recurrent state
    // cannot be cut: only its whole length.
    if (llama_model_is_recurrent(model_->get()) || llama_model_is_hybrid(model_->get())) return (uint32_t)n;
    if (n_swa_ == 0) return 1;
    const llama_pos pos_min = llama_memory_seq_pos_min(mem_, slot.seq);
    if (pos_min < 0) return 0;
    return pos_min == 0 ? 1u : (uint32_t)std::min<llama_pos>(n, pos_min + n_swa_ - 1);
}

void Engine::stash(const Slot &slot) {
    if (!cache_ || !cache_->enabled() || slot.cache.size() < kMinStateTokens) return;
    uint32_t min_prefix = serves_from(slot);
    if (min_prefix == 0) return;
    min_prefix = std::max<uint32_t>(min_prefix, (uint32_t)kMinStateTokens);
    if (cache_->covers(slot.cache, min_prefix)) return;
    CachedState st;
    const size_t size = llama_state_seq_get_size_ext(ctx_, slot.seq, LLAMA_STATE_SEQ_FLAGS_NONE);
    if (size == 0 || !cache_->accepts(size)) return;
    st.data.resize(size);
    const size_t got = llama_state_seq_get_data_ext(ctx_, reinterpret_cast<uint8_t *>(st.data.data()), size, slot.seq,
                                                    LLAMA_STATE_SEQ_FLAGS_NONE);
    if (got == 0) return;
    st.data.resize(got);
    st.tokens = slot.cache;
    st.min_prefix = min_prefix;
    cache_->put(std::move(st));
}

bool Engine::restore(Slot &slot, const std::vector<llama_token> &prompt, size_t live) {
    if (!cache_ || !cache_->enabled()) return false;
    const size_t limit = prompt.size() - 1;  // the last prompt token is always evaluated
    const auto m = cache_->find(prompt, limit, std::max(live, kMinStateTokens - 1));
    if (!m.state) {
        cache_->count_miss();
        return false;
    }
    const auto seq = slot.seq;
    const auto n = (llama_pos)m.n;
    const auto &data = m.state->data;
    // set_data clears the sequence first; it fails (0) when the cache has no room.
    const size_t used = llama_state_seq_set_data_ext(ctx_, reinterpret_cast<const uint8_t *>(data.data()), data.size(),
                                                     seq, LLAMA_STATE_SEQ_FLAGS_NONE);
    bool ok = used != 0 && llama_memory_seq_rm(mem_, seq, n, -1) && llama_memory_seq_pos_max(mem_, seq) == n - 1;
    if (ok && n_swa_ > 0) ok = llama_memory_seq_pos_min(mem_, seq) <= std::max<llama_pos>(0, n - n_swa_ + 1);
    if (!ok) {
        llama_memory_seq_rm(mem_, seq, -1, -1);
        slot.cache.clear();
        cache_->count_miss();
        return false;
    }
    slot.cache.assign(prompt.begin(), prompt.begin() + (long)m.n);
    slot.n_reused = (int32_t)m.n;
    slot.prompt_done = m.n;
    cache_->count_hit(m.n);
    return true;
}

}  // namespace sarai
