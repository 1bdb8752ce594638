// Images in the engine's sequences: a request's media spans (media.h) are checked
// at submit, planned into a step beside its token batch under the same step budget,
// and their embeddings decoded right after that batch, in decodes of their own (a
// llama_batch carries tokens or embeddings, never both). Called from engine.cpp
// with the lock held, on the driving thread.
#include <algorithm>
#include <chrono>

#include "engine.h"
#include "engine_slot.h"
#include "errors.h"
#include "log.h"

namespace sarai {

namespace {

const MediaSpan *media_at(const Request &req, size_t k) {
    for (const auto &m : req.media)
        if (k >= m.start && k < m.start + m.n_tokens) return &m;
    return nullptr;
}

}  // namespace

void Engine::check_prompt(const Request &req) const {
    const auto n_embd = (size_t)llama_model_n_embd_inp(model_->get());
    const uint32_t n_ubatch = llama_n_ubatch(ctx_);
    size_t k = 0;
    for (const auto &m : req.media) {
        if (m.start < k || m.n_tokens == 0 || m.start + m.n_tokens > req.prompt.size())
            throw InvalidArgument("media spans must lie inside the prompt, in order, without overlapping");
        if (!m.embd || m.embd->size() != m.n_tokens * n_embd)
            throw InvalidArgument("an image's embeddings do not match this model's input width (another model's projector?)");
        // One decode reads a whole image whose positions attend to each other (gemma3's),
        // and llama.cpp needs such a batch in one micro-batch.
        if (m.non_causal && m.n_tokens > n_ubatch)
            throw InvalidArgument("an image takes " + std::to_string(m.n_tokens) + " positions read in one batch, and "
                                  "n_ubatch is " + std::to_string(n_ubatch) + ": raise n_batch and n_ubatch");
        for (; k < m.start; ++k) model_->check_token(req.prompt[k]);
        for (size_t i = 0; i < m.n_tokens; ++i, ++k)
            if (req.prompt[k] != media_placeholder(m.id, i))
                throw InvalidArgument("the prompt's tokens at an image are not its placeholders");
    }
    if (!req.media.empty() && k == req.prompt.size())
        throw InvalidArgument("the prompt ends with an image: the last prompt token must be text");
    for (; k < req.prompt.size(); ++k) model_->check_token(req.prompt[k]);
}

int32_t Engine::plan_media(Slot &slot, size_t k, int32_t room) {
    const MediaSpan *m = media_at(slot.req, k);
    if (!m || room <= 0) return 0;
    // A causal image goes in pieces like text, as the budget allows; one whose positions
    // attend to each other is read whole (at most n_ubatch positions: check_prompt), so
    // its step may run over the budget by that one decode.
    const auto left = (int32_t)(m->start + m->n_tokens - k);
    const int32_t count = m->non_causal ? left : std::min(left, room);
    media_jobs_.push_back(MediaJob{&slot, m, k, count});
    return count;
}

void Engine::decode_media(std::vector<Event> &out) {
    const auto n_embd = (size_t)llama_model_n_embd_inp(model_->get());
    for (const MediaJob &j : media_jobs_) {
        Slot &s = *j.slot;
        // The slot's token rows of this step may have failed (the slot ended) or been
        // cancelled: its image then waits or goes with it.
        if (!s.busy || s.cancel.load() || s.prompt_done != j.from || s.cache.size() != j.from) continue;
        const MediaSpan &m = *j.span;
        const auto n = (size_t)j.count;
        std::vector<llama_pos> pos(n);
        std::vector<int32_t> n_seq_id(n, 1);
        std::vector<llama_seq_id> seq(n, s.seq);
        std::vector<llama_seq_id *> seq_ptr(n);
        std::vector<int8_t> logits(n, 0);  // never the prompt's last position (check_prompt)
        for (size_t i = 0; i < n; ++i) {
            pos[i] = (llama_pos)(j.from + i);
            seq_ptr[i] = &seq[i];
        }
        float *embd = const_cast<float *>(m.embd->data()) + (j.from - m.start) * n_embd;  // llama.cpp only reads it
        llama_batch batch = {(int32_t)n, nullptr, embd, pos.data(), n_seq_id.data(), seq_ptr.data(), logits.data()};
        decoding_.assign(1, &s);
        if (m.non_causal) llama_set_causal_attn(ctx_, false);
        clear_last_error();
        mu_.unlock();  // cancel() must not wait for a decode
        const auto t0 = std::chrono::steady_clock::now();
        int32_t rc;
        try {
            rc = llama_decode(ctx_, batch);
        } catch (...) {
            rc = -100;  // never leave with mu_ unlocked; reported as a failed decode
        }
        const double dt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        mu_.lock();
        if (m.non_causal) llama_set_causal_attn(ctx_, true);
        stats_.t_decode_ms += dt;
        stats_.n_decode_calls++;
        if (rc == 0) {
            s.cache.insert(s.cache.end(), s.req.prompt.begin() + (long)j.from, s.req.prompt.begin() + (long)(j.from + n));
            s.prompt_done += n;
            stats_.n_batch_tokens += (int64_t)n;
            stats_.n_prompt_tokens += (int64_t)n;
            continue;
        }
        llama_memory_seq_rm(mem_, s.seq, (llama_pos)s.cache.size(), -1);
        if (rc == 2 || s.cancel.load()) continue;  // aborted: ended as "cancelled" by the next step
        finish(s, out, EventKind::Error, nullptr,
               rc == 1 ? std::string("the KV cache is full: no room for the image (fewer concurrent sequences or a larger n_ctx)")
                       : with_reason("llama_decode failed on an image's embeddings with code " + std::to_string(rc)));
    }
    media_jobs_.clear();
    decoding_.clear();
}

void Engine::align_to_media(Slot &slot) {
    // A kept prefix that ends inside an image read whole (its cells were computed with
    // the whole image in view) is no prefix of it: the image is decoded again.
    const MediaSpan *m = media_at(slot.req, slot.prompt_done);
    if (!m || !m->non_causal || m->start == slot.prompt_done) return;
    llama_memory_seq_rm(mem_, slot.seq, (llama_pos)m->start, -1);
    slot.cache.resize(m->start);
    slot.prompt_done = m->start;
    slot.n_reused = (int32_t)m->start;
}

}  // namespace sarai
