// Manual access to one idle sequence of the engine: the single-user Llama's
// prompt cache (sequence 0), llama-cpp-python's eval(), and per-sequence state
// save/restore. Kept apart from the batch loop (engine.cpp): these run only
// while the sequence has no request, on the driving thread.
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
    size_t done = 0;
    while (done < tokens.size()) {
        const size_t n = std::min<size_t>(n_batch_, tokens.size() - done);
        for (size_t i = 0; i < n; ++i) {
            batch_.token[i] = tokens[done + i];
            batch_.pos[i] = (llama_pos)(s.cache.size() + i);
            batch_.n_seq_id[i] = 1;
            batch_.seq_id[i][0] = s.seq;
            batch_.logits[i] = done + i + 1 == tokens.size();
        }
        batch_.n_tokens = (int32_t)n;
        clear_last_error();
        const int32_t rc = llama_decode(ctx_, batch_);
        if (rc != 0) {
            // A failed decode may leave part of the chunk behind: keep the cache true.
            llama_memory_seq_rm(mem_, s.seq, (llama_pos)s.cache.size(), -1);
            if (rc == 1) throw std::runtime_error("no room in the KV cache for the batch (context full)");
            throw std::runtime_error(with_reason("llama_decode failed with code " + std::to_string(rc)));
        }
        s.cache.insert(s.cache.end(), tokens.begin() + (long)done, tokens.begin() + (long)(done + n));
        done += n;
    }
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
    s.cache = tokens;
}

}  // namespace sarai
