#include "engine.h"
#include "engine_slot.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>

#include "errors.h"
#include "log.h"

namespace sarai {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

Engine::Engine(std::shared_ptr<Model> model, const ContextParams &p) : model_(std::move(model)) {
    const int32_t n_seq = p.n_seq_max;
    // llama.cpp's internal LLAMA_MAX_SEQ (src/llama-cparams.h), not exported
    // by llama.h; a larger n_seq_max would fail context creation less clearly.
    constexpr int32_t kMaxSeq = 256;
    if (n_seq < 1 || n_seq > kMaxSeq)
        throw InvalidArgument("n_seq_max must be in [1, " + std::to_string(kMaxSeq) + "]");
    if (!(p.step_budget_ms >= 0.0) || !std::isfinite(p.step_budget_ms))
        throw InvalidArgument("step_budget_ms must be a finite number >= 0");
    step_budget_ms_ = p.step_budget_ms;
    if (p.embeddings) throw InvalidArgument("the engine generates text; use Context for embeddings");
    // A unified KV cache: every sequence may use any cell, so a short request
    // leaves room for a long one, and prefixes can be shared with seq_cp
    // without copying tensors (the reference server's default too).
    auto params = make_llama_params(p, (uint32_t)n_seq, /*kv_unified=*/true);
    params.abort_callback = &Engine::abort_cb;
    params.abort_callback_data = this;
    clear_last_error();
    ctx_ = llama_init_from_model(model_->get(), params);
    if (!ctx_) throw std::runtime_error(with_reason("failed to create the llama.cpp context"));
    mem_ = llama_get_memory(ctx_);
    n_ctx_ = llama_n_ctx(ctx_);
    // Per-sequence limit as the reference server computes it (n_ctx_slot): with
    // a unified cache one sequence may grow to the whole context.
    n_ctx_seq_ = llama_n_ctx_seq(ctx_);
    n_batch_ = llama_n_batch(ctx_);
    n_vocab_ = model_->n_vocab();
    n_swa_ = llama_model_n_swa(model_->get());
    batch_ = llama_batch_init((int32_t)n_batch_, 0, 1);  // allocated once, refilled every step
    owner_.resize(n_batch_);
    row_is_prompt_.resize(n_batch_);
    row_is_draft_.resize(n_batch_);
    can_roll_back_ = !llama_model_is_recurrent(model_->get()) && !llama_model_is_hybrid(model_->get());
    for (int32_t s = 0; s < n_seq; ++s) {
        slots_.push_back(std::make_unique<Slot>());
        slots_.back()->seq = s;
    }
}

Engine::~Engine() {
    llama_batch_free(batch_);
    if (ctx_) llama_free(ctx_);
}

bool Engine::abort_cb(void *data) {
    // Abort only when nobody in the decode wants its result: cancelling one
    // sequence must leave the others' tokens exactly as they would be.
    const auto *e = static_cast<const Engine *>(data);
    if (e->decoding_.empty()) return false;
    for (const Slot *s : e->decoding_)
        if (!s->cancel.load(std::memory_order_relaxed)) return false;
    return true;
}

int64_t Engine::submit(Request req) {
    if (req.prompt.empty()) throw InvalidArgument("the prompt is empty (it needs at least one token)");
    check_prompt(req);
    for (auto t : req.preserved_tokens) model_->check_token(t);
    // The last prompt token and at least one generated token must fit.
    if (req.prompt.size() >= n_ctx_seq_)
        throw InvalidArgument("the prompt has " + std::to_string(req.prompt.size()) +
                              " tokens; a sequence holds at most " + std::to_string(n_ctx_seq_) +
                              " (prompt and generated tokens), so the prompt must be shorter");
    if (req.max_tokens < -1) throw InvalidArgument("max_tokens must be >= -1 (-1 or 0: until the context end)");
    if (req.n_probs < -1 || req.n_probs > n_vocab_)
        throw InvalidArgument("n_probs must be in [-1, n_vocab] (-1: no logprobs)");
    validate_sampler_params(req.sampling);
    validate_draft_limits(req.draft_max, req.draft_min);
    auto pending = std::make_unique<Pending>();
    pending->sampler = std::make_unique<Sampler>(*model_, req.sampling);  // grammar/logit bias errors here
    pending->req = std::move(req);
    std::lock_guard<std::mutex> lock(mu_);
    pending->id = next_id_++;
    const int64_t id = pending->id;
    queue_.push_back(std::move(pending));
    return id;
}

Engine::Slot *Engine::find_active(int64_t id) const {
    for (const auto &s : slots_)
        if (s->busy && s->id == id) return s.get();
    return nullptr;
}

bool Engine::cancel(int64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    if (Slot *s = find_active(id)) {
        s->cancel.store(true);
        return true;
    }
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if ((*it)->id == id) {
            cancelled_queued_.emplace_back(id, (int32_t)(*it)->req.prompt.size());
            queue_.erase(it);
            return true;
        }
    }
    return false;
}

bool Engine::release(int64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    if (Slot *s = find_active(id)) {
        // A sampled but undecoded token is simply dropped: `cache` only ever
        // holds decoded tokens, so it stays exact for the next prefix match.
        s->busy = false;
        s->has_next = s->waiting = false;
        s->sampler.reset();
        s->utf8.reset();
        s->cancel.store(false);
        return true;
    }
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if ((*it)->id == id) {
            queue_.erase(it);
            return true;
        }
    }
    return false;
}

void Engine::finish(Slot &slot, std::vector<Event> &out, EventKind kind, const char *reason,
                    const std::string &error) {
    Event ev;
    ev.id = slot.id;
    ev.kind = kind;
    ev.text = slot.utf8.flush();  // an unfinished character at the end is passed on as is
    if (reason) ev.finish_reason = reason;
    ev.error = error;
    ev.n_prompt = (int32_t)slot.req.prompt.size();
    ev.n_reused = slot.n_reused;
    ev.n_generated = slot.n_generated;
    spec_counts(slot, ev);
    out.push_back(std::move(ev));
    slot.busy = false;
    slot.has_next = slot.waiting = false;
    slot.sampler.reset();
    slot.cancel.store(false);
}

void Engine::admit_locked() {
    while (!queue_.empty()) {
        // The free sequence whose cache shares the longest prefix with the prompt.
        Slot *chosen = nullptr;
        size_t chosen_len = 0;
        const auto &prompt = queue_.front()->req.prompt;
        for (const auto &s : slots_) {
            if (s->busy) continue;
            const size_t c = common_prefix(s->cache, prompt);
            if (!chosen || c > chosen_len) {
                chosen = s.get();
                chosen_len = c;
            }
        }
        if (!chosen) return;  // all busy: the request waits (FIFO)
        std::unique_ptr<Pending> p = std::move(queue_.front());
        queue_.pop_front();
        Slot &s = *chosen;
        s.busy = true;
        s.id = p->id;
        s.req = std::move(p->req);
        s.sampler = std::move(p->sampler);
        s.admit_order = admit_counter_++;
        s.admitted = Clock::now();
        s.next = -1;
        s.has_next = s.waiting = false;
        s.n_generated = 0;
        s.utf8.reset();
        s.cancel.store(false);
        s.acceptance.reset();
        s.n_drafted = s.n_draft_accepted = 0;
        choose_prefix(s, s.req.prompt);
        align_to_media(s);
    }
}

void Engine::emit_token(Slot &slot, llama_token tok, const float *raw, std::vector<Event> &out) {
    slot.n_generated++;
    stats_.n_sampled++;
    Event ev;
    ev.id = slot.id;
    ev.kind = EventKind::Token;
    ev.token = tok;
    ev.eog = model_->is_eog(tok);
    if (slot.req.n_probs >= 0 && raw) ev.logprob = token_logprobs(raw, n_vocab_, tok, slot.req.n_probs, ev.top);
    const auto &keep = slot.req.preserved_tokens;
    const bool special = !keep.empty() && std::find(keep.begin(), keep.end(), tok) != keep.end();
    ev.text = slot.utf8.push(model_->piece(tok, special));
    ev.n_prompt = (int32_t)slot.req.prompt.size();
    ev.n_reused = slot.n_reused;
    ev.n_generated = slot.n_generated;
    spec_counts(slot, ev);
    const bool eog = ev.eog;
    slot.acceptance.observe(tok);
    out.push_back(std::move(ev));
    if (eog && !slot.req.ignore_eos) return finish(slot, out, EventKind::Done, "stop", "");
    if (slot.req.max_tokens > 0 && slot.n_generated >= slot.req.max_tokens)
        return finish(slot, out, EventKind::Done, "length", "");
    // The token would be decoded at position cache.size(): past the
    // sequence's context there is no room for it, so generation ends here.
    if (slot.cache.size() >= n_ctx_seq_) return finish(slot, out, EventKind::Done, "length", "");
    slot.next = tok;
    slot.has_next = true;  // decoded by the next step, so a caller that stops here wastes no decode
}

llama_token Engine::sample_slot(Slot &slot, const float *row, std::vector<Event> &out) {
    if (!row) {
        finish(slot, out, EventKind::Error, nullptr, "no logits for the sequence after decode");
        return -1;
    }
    if (slot.req.external_sampling) {
        // The logits are copied: other sequences' decodes overwrite llama.cpp's
        // buffer while this one waits for the caller.
        slot.ext_logits.assign(row, row + n_vocab_);
        slot.waiting = true;
        Event ev;
        ev.id = slot.id;
        ev.kind = EventKind::NeedToken;
        ev.n_prompt = (int32_t)slot.req.prompt.size();
        ev.n_reused = slot.n_reused;
        ev.n_generated = slot.n_generated;
        out.push_back(std::move(ev));
        return -1;
    }
    llama_token tok;
    try {
        tok = slot.sampler->sample_from(row, n_vocab_);
        slot.sampler->accept(tok);
    } catch (const std::exception &e) {
        finish(slot, out, EventKind::Error, nullptr, e.what());
        return -1;
    }
    emit_token(slot, tok, row, out);
    return tok;
}

bool Engine::decode_batch(std::vector<Event> &out) {
    // Called with mu_ held (via the lock in step); it is released around llama_decode.
    // Returns true when the whole batch went through in one successful llama_decode
    // (the step's time then measures this batch: see learn_costs).
    bool clean = true;
    int32_t n_total = batch_.n_tokens;
    int32_t i = 0;
    int32_t nb = n_total;
    while (i < n_total) {
        const int32_t cnt = std::min(nb, n_total - i);
        llama_batch view = {cnt,
                            batch_.token + i,
                            nullptr,
                            batch_.pos + i,
                            batch_.n_seq_id + i,
                            batch_.seq_id + i,
                            batch_.logits + i};
        decoding_.clear();
        for (int32_t k = i; k < i + cnt; ++k)
            if (std::find(decoding_.begin(), decoding_.end(), owner_[k]) == decoding_.end())
                decoding_.push_back(owner_[k]);
        clear_last_error();
        mu_.unlock();  // cancel() must not wait for a decode
        const auto t0 = Clock::now();
        int32_t rc;
        try {
            rc = llama_decode(ctx_, view);
        } catch (...) {
            rc = -100;  // never leave with mu_ unlocked; reported as a failed decode
        }
        const double dt = ms_since(t0);
        mu_.lock();
        stats_.t_decode_ms += dt;
        stats_.n_decode_calls++;
        if (rc == 0) {
            stats_.n_batch_tokens += cnt;
            for (int32_t k = i; k < i + cnt; ++k) {
                Slot *s = owner_[k];
                s->cache.push_back(batch_.token[k]);
                if (row_is_prompt_[k]) {
                    s->prompt_done++;
                    stats_.n_prompt_tokens++;
                } else s->has_next = false;
            }
            for (int32_t k = i; k < i + cnt; ++k) {
                if (!batch_.logits[k] || row_is_draft_[k]) continue;  // a draft: verified from its first row
                Slot *s = owner_[k];
                if (s->cancel.load()) continue;  // ended as "cancelled" at the end of the step
                if (!s->draft.empty()) verify_draft(*s, k - i, out);
                else sample_slot(*s, llama_get_logits_ith(ctx_, k - i), out);
            }
            i += cnt;
            continue;
        }
        clean = false;
        n_total = drop_drafts(i, n_total);
        if (rc == 1) {
            // Free sequences keep their tokens only for prefix reuse: evict
            // them before anyone running is refused room.
            bool evicted = false;
            for (auto &o : slots_) {
                if (o->busy || o->cache.empty()) continue;
                stash(*o);
                llama_memory_seq_rm(mem_, o->seq, -1, -1);
                o->cache.clear();
                evicted = true;
            }
            if (evicted) continue;
        }
        if (rc == 1 && cnt > 1) {
            // No KV room for the whole batch (llama.cpp restored its state):
            // retry in smaller pieces, as the reference server does.
            nb = std::max(1, cnt / 2);
            continue;
        }
        // Failed: drop whatever part of the view reached the cache, and end
        // the sequences concerned; the others go on.
        std::vector<Slot *> dead;
        if (rc == 1) {
            // Not even one token fits: the cache is full.
            Slot *s = owner_[i];
            llama_memory_seq_rm(mem_, s->seq, (llama_pos)s->cache.size(), -1);
            dead.push_back(s);
            if (s->cancel.load()) {
                // ended as "cancelled" below
            } else if (row_is_prompt_[i]) {
                finish(*s, out, EventKind::Error, nullptr,
                       "the KV cache is full: no room for the prompt (fewer concurrent sequences or a larger n_ctx)");
            } else {
                finish(*s, out, EventKind::Done, "length", "");
            }
        } else {
            const std::string why =
                rc == 2 ? std::string() : with_reason("llama_decode failed with code " + std::to_string(rc));
            for (Slot *s : decoding_) {
                llama_memory_seq_rm(mem_, s->seq, (llama_pos)s->cache.size(), -1);
                dead.push_back(s);
                // rc 2: aborted because every one of them was cancelled.
                if (rc != 2 && !s->cancel.load()) finish(*s, out, EventKind::Error, nullptr, why);
            }
        }
        // Their later rows cannot be decoded either (positions must follow the
        // cache without a gap): compact the rest of the batch without them.
        int32_t w = i;
        for (int32_t k = i; k < n_total; ++k) {
            if (std::find(dead.begin(), dead.end(), owner_[k]) != dead.end()) continue;
            move_row(k, w++);
        }
        n_total = w;
        batch_.n_tokens = w;
    }
    decoding_.clear();
    return clean;
}

void Engine::move_row(int32_t from, int32_t to) {
    if (from == to) return;
    batch_.token[to] = batch_.token[from];
    batch_.pos[to] = batch_.pos[from];
    batch_.seq_id[to][0] = batch_.seq_id[from][0];
    batch_.logits[to] = batch_.logits[from];
    owner_[to] = owner_[from];
    row_is_prompt_[to] = row_is_prompt_[from];
    row_is_draft_[to] = row_is_draft_[from];
}

std::vector<Event> Engine::step() {
    const auto t0 = Clock::now();
    std::vector<Event> out;
    std::unique_lock<std::mutex> lock(mu_);
    for (const auto &[id, n_prompt] : cancelled_queued_) {
        Event ev;
        ev.id = id;
        ev.kind = EventKind::Done;
        ev.finish_reason = "cancelled";
        ev.n_prompt = n_prompt;
        out.push_back(std::move(ev));
    }
    cancelled_queued_.clear();
    for (auto &s : slots_)
        if (s->busy && s->cancel.load()) finish(*s, out, EventKind::Done, "cancelled", "");
    admit_locked();

    // One token for every generating sequence first (they are latency
    // bound), then prompt chunks in order_prompts' order (the nearest to its
    // first token first), up to n_batch, or up to the step budget while
    // sequences generate.
    int32_t n = 0;
    auto add_row = [&](Slot &s, llama_token tok, llama_pos pos, bool logits, bool prompt) {
        batch_.token[n] = tok;
        batch_.pos[n] = pos;
        batch_.n_seq_id[n] = 1;
        batch_.seq_id[n][0] = s.seq;
        batch_.logits[n] = logits;
        owner_[n] = &s;
        row_is_prompt_[n] = prompt;
        row_is_draft_[n] = 0;
        ++n;
    };
    std::vector<Slot *> prompting;
    for (auto &s : slots_)
        if (s->prompting()) prompting.push_back(s.get());
    plan_drafts(!prompting.empty(), step_budget_ms_);
    int32_t n_drafts = 0;
    for (auto &s : slots_) {
        if (!(s->busy && s->has_next && n < (int32_t)n_batch_)) continue;
        llama_pos pos = (llama_pos)s->cache.size();
        add_row(*s, s->next, pos++, true, false);
        for (llama_token d : s->draft) {  // planned to fit n_batch
            add_row(*s, d, pos++, true, false);
            row_is_draft_[n - 1] = 1;
            ++n_drafts;
        }
    }
    const int32_t n_gen = n;
    order_prompts(prompting);
    const bool budgeted = step_budget_ms_ > 0.0 && n_gen > 0 && !prompting.empty();
    const int32_t budget = budgeted ? prompt_budget_locked(n_gen) : -1;
    const int32_t limit = budgeted ? n_gen + budget : (int32_t)n_batch_;
    int32_t n_logits = n_gen;
    int32_t media_rows = 0;  // image positions planned for this step (plan_media), within the same limit
    size_t wanted = 0;  // prompt tokens that n_batch alone would have let in
    for (Slot *s : prompting) {
        const size_t total = s->req.prompt.size();
        size_t k = s->prompt_done;
        wanted += total - k;
        llama_pos pos = (llama_pos)s->cache.size();
        while (k < total && n + media_rows < limit) {
            // An image's embeddings go in a decode of their own after this batch (a
            // llama_batch holds tokens or embeddings, not both); the text after the
            // image waits for the next step.
            if (const int32_t m = plan_media(*s, k, limit - n - media_rows); m != 0) {
                media_rows += m;
                break;
            }
            // Logits only where a token must be sampled: the last prompt token.
            const bool last = k + 1 == total;
            add_row(*s, s->req.prompt[k], pos++, last, true);
            n_logits += last ? 1 : 0;
            ++k;
        }
    }
    batch_.n_tokens = n;
    if (n > 0) {
        const auto t_batch = Clock::now();
        const bool clean = decode_batch(out);
        for (auto &s : slots_)
            if (s->busy && s->cancel.load()) finish(*s, out, EventKind::Done, "cancelled", "");
        const int32_t n_prompt = n - n_gen;
        // Only a batch decoded whole in one call measures what it holds. Steps with
        // drafts teach only the cost line (the budget's averages are per plain row).
        const double batch_ms = ms_since(t_batch);
        if (clean && n_drafts == 0) learn_costs(n_logits, n - n_logits, batch_ms);
        if (clean && n_prompt == 0) step_cost_.observe(n, batch_ms);
        stats_.n_steps++;
        stats_.t_step_ms += ms_since(t0);
        stats_.last_gen_rows = n_gen;
        stats_.last_prompt_tokens = n_prompt;
        stats_.last_budget = budget;
        if (n_gen > 0) stats_.max_prompt_beside_gen = std::max(stats_.max_prompt_beside_gen, n_prompt);
        if (budgeted && (size_t)n_prompt < std::min(wanted, (size_t)n_batch_ - n_gen)) stats_.n_budgeted_steps++;
    }
    if (!media_jobs_.empty()) decode_media(out);
    return out;
}

const std::vector<float> &Engine::logits(int64_t id) const {
    std::lock_guard<std::mutex> lock(mu_);
    const Slot *s = find_active(id);
    if (!s || !s->waiting) throw InvalidArgument("request " + std::to_string(id) + " is not waiting for a token");
    return s->ext_logits;
}

std::vector<Event> Engine::provide_token(int64_t id, llama_token token) {
    std::lock_guard<std::mutex> lock(mu_);
    Slot *s = find_active(id);
    if (!s || !s->waiting) throw InvalidArgument("request " + std::to_string(id) + " is not waiting for a token");
    model_->check_token(token);
    // Accepting keeps penalties and grammar state in step with the text.
    try {
        s->sampler->accept(token);
    } catch (const std::exception &e) {
        throw InvalidArgument(std::string("token not accepted by the request's sampler: ") + e.what());
    }
    s->waiting = false;
    std::vector<Event> out;
    emit_token(*s, token, s->ext_logits.data(), out);
    return out;
}

std::vector<Event> Engine::sample_with(int64_t id, const float *logits, size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    Slot *s = find_active(id);
    if (!s || !s->waiting) throw InvalidArgument("request " + std::to_string(id) + " is not waiting for a token");
    if (n != (size_t)n_vocab_) throw InvalidArgument("logits must have n_vocab entries");
    const llama_token tok = s->sampler->sample_from(logits, n_vocab_);
    s->sampler->accept(tok);
    s->waiting = false;
    std::vector<Event> out;
    // Logprobs come from the raw logits, not the caller's modified ones.
    emit_token(*s, tok, s->ext_logits.data(), out);
    return out;
}

bool Engine::idle() const {
    std::lock_guard<std::mutex> lock(mu_);
    if (!queue_.empty() || !cancelled_queued_.empty()) return false;
    for (const auto &s : slots_)
        if (s->busy) return false;
    return true;
}

int32_t Engine::n_active() const {
    std::lock_guard<std::mutex> lock(mu_);
    int32_t n = 0;
    for (const auto &s : slots_) n += s->busy ? 1 : 0;
    return n;
}

int32_t Engine::n_queued() const {
    std::lock_guard<std::mutex> lock(mu_);
    return (int32_t)queue_.size();
}

int64_t Engine::kv_used() const {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t n = 0;
    for (const auto &s : slots_) n += (int64_t)s->cache.size();
    return n;
}

EngineStats Engine::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    EngineStats s = stats_;
    s.logits_row_ms = logits_row_ms_;
    s.prompt_token_ms = prompt_token_ms_;
    s.step_fixed_ms = step_cost_.fixed_ms();
    s.step_row_ms = step_cost_.row_ms();
    return s;
}

void Engine::reset_stats() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_ = EngineStats{};
}

void Engine::set_threads(int32_t n_threads, int32_t n_threads_batch) {
    if (n_threads < 1 || n_threads_batch < 1) throw InvalidArgument("thread counts must be >= 1");
    llama_set_n_threads(ctx_, n_threads, n_threads_batch);
}

void Engine::clear() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto &s : slots_) {
        s->busy = s->has_next = s->waiting = false;
        s->sampler.reset();
        s->utf8.reset();
        s->cache.clear();
        s->cancel.store(false);
    }
    queue_.clear();
    cancelled_queued_.clear();
    llama_memory_clear(mem_, true);
}

}  // namespace sarai
