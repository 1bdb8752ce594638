// Manual access to one idle sequence of the engine: the single-user Llama's
// prompt cache (sequence 0), llama-cpp-python's eval(), and per-sequence state
// save/restore. Kept apart from the batch loop (engine.cpp): these run only
// while the sequence has no request, on the driving thread.
#include <algorithm>
#include <string>

#include "engine.h"
#include "engine_slot.h"
#include "errors.h"
#include "log.h"

namespace sarai {

Engine::Slot &Engine::idle_slot(int32_t seq) const {
    if (seq < 0 || seq >= (int32_t)slots_.size())
        throw InvalidArgument("sequence " + std::to_string(seq) + " does not exist (n_seq = " +
                              std::to_string(slots_.size()) + ")");
    Slot &s = *slots_[(size_t)seq];
    if (s.busy) throw InvalidArgument("sequence " + std::to_string(seq) + " is running a request");
    return s;
}

std::vector<llama_token> Engine::cached(int32_t seq) const {
    std::lock_guard<std::mutex> lock(mu_);
    if (seq < 0 || seq >= (int32_t)slots_.size()) throw InvalidArgument("no such sequence");
    return slots_[(size_t)seq]->cache;
}

std::vector<float> Engine::eval(int32_t seq, const std::vector<llama_token> &tokens) {
    Slot &s = idle_slot(seq);
    for (auto t : tokens) model_->check_token(t);
    if (s.cache.size() + tokens.size() > n_ctx_seq_)
        throw InvalidArgument("cannot evaluate " + std::to_string(tokens.size()) + " tokens after " +
                              std::to_string(s.cache.size()) + ": a sequence holds " + std::to_string(n_ctx_seq_));
    // No abort can reach this decode: the abort callback only acts on requests in flight.
    decode_tokens(ctx_, batch_, n_batch_, s.seq, s.cache.size(), tokens, false, [&](size_t off, size_t n) {
        s.cache.insert(s.cache.end(), tokens.begin() + (long)off, tokens.begin() + (long)(off + n));
    });
    const float *row = tokens.empty() ? nullptr : llama_get_logits_ith(ctx_, -1);
    return row ? std::vector<float>(row, row + n_vocab_) : std::vector<float>{};
}

std::string Engine::seq_state(int32_t seq) const {
    Slot &s = idle_slot(seq);
    const size_t n = llama_state_seq_get_size(ctx_, s.seq);
    std::string buf(n, '\0');
    buf.resize(llama_state_seq_get_data(ctx_, reinterpret_cast<uint8_t *>(buf.data()), n, s.seq));
    return buf;
}

uint32_t Engine::seq_serves_from(int32_t seq) const {
    std::lock_guard<std::mutex> lock(mu_);
    return serves_from(idle_slot(seq));
}

void Engine::set_seq_state(int32_t seq, const std::string &data, const std::vector<llama_token> &tokens) {
    Slot &s = idle_slot(seq);
    for (auto t : tokens) model_->check_token(t);
    if (tokens.size() > n_ctx_seq_) throw InvalidArgument("the state holds more tokens than a sequence can");
    llama_memory_seq_rm(mem_, s.seq, -1, -1);
    s.cache.clear();
    clear_last_error();
    const size_t used = llama_state_seq_set_data(ctx_, reinterpret_cast<const uint8_t *>(data.data()), data.size(), s.seq);
    if (used == 0) {
        llama_memory_seq_rm(mem_, s.seq, -1, -1);
        throw InvalidArgument(with_reason("the state does not fit this model and context"));
    }
    // The sequence continues at position n = tokens.size(): the restored cells must
    // be positions 0..n-1, or the next decode fails (or reads the wrong cells); a
    // sliding-window memory needs only the window of position n (own_prefix's rule).
    const llama_pos lo = llama_memory_seq_pos_min(mem_, s.seq), hi = llama_memory_seq_pos_max(mem_, s.seq);
    const auto n = (llama_pos)tokens.size();
    const llama_pos lo_max = n_swa_ > 0 ? std::max<llama_pos>(0, n - n_swa_ + 1) : 0;
    const bool fits = tokens.empty() ? hi < 0 : (lo >= 0 && lo <= lo_max && hi + 1 == n);
    if (!fits) {
        llama_memory_seq_rm(mem_, s.seq, -1, -1);
        throw InvalidArgument("the state's cache holds positions " + std::to_string(lo) + ".." + std::to_string(hi) +
                              " but lists " + std::to_string(tokens.size()) + " tokens: they do not belong together");
    }
    s.cache = tokens;
}

}  // namespace sarai
