// Speculative decoding in the engine's step (see engine.h): which sequences
// draft how many tokens, and the verification of a draft after the decode.
// The drafter, acceptance record and cost line are in spec.{h,cpp}.
#include <algorithm>

#include "engine.h"
#include "engine_slot.h"
#include "errors.h"

namespace sarai {

void Engine::set_speculation(const SpecConfig &c) {
    validate_spec_config(c);
    std::lock_guard<std::mutex> lock(mu_);
    spec_ = c;
}

SpecConfig Engine::speculation() const {
    std::lock_guard<std::mutex> lock(mu_);
    return spec_;
}

std::string Engine::spec_off_reason(const Slot &slot) const {
    if (!can_roll_back_) return "the model's memory (recurrent or hybrid) cannot drop rejected draft tokens";
    if (slot.req.external_sampling)
        return "Python logits processors or stopping criteria choose every token, one at a time";
    const int32_t n_max = slot.req.draft_max >= 0 ? slot.req.draft_max : spec_.n_max;
    if (n_max == 0) return "no drafts asked for (draft_max 0)";
    // The n-gram lookup reads the sequence's tokens, whose image positions are placeholders.
    if (!slot.req.media.empty()) return "the prompt holds images";
    return "";
}

void Engine::spec_counts(const Slot &slot, Event &ev) const {
    ev.n_drafted = slot.n_drafted;
    ev.n_draft_accepted = slot.n_draft_accepted;
    if (ev.kind == EventKind::Done) ev.speculation = spec_off_reason(slot);
}

void Engine::plan_drafts(bool prompts_waiting, double step_budget_ms) {
    std::vector<Slot *> drafting;
    std::vector<DraftCandidate> cands;
    int32_t n_gen = 0;
    for (auto &sp : slots_) {
        Slot &s = *sp;
        s.draft.clear();
        if (!s.busy || !s.has_next) continue;
        ++n_gen;
        if (!spec_off_reason(s).empty()) continue;
        const int32_t n_max = s.req.draft_max >= 0 ? s.req.draft_max : spec_.n_max;
        // Proposed every step, drafted or not: the acceptance record learns from both.
        s.acceptance.propose(ngram_draft(s.cache, s.next, spec_.ngram_n, n_max));
        // `next` goes to position cache.size(); the draft follows it within the
        // sequence's context, and this step emits at most draft + 1 tokens.
        int32_t avail = (int32_t)s.acceptance.proposal().size();
        avail = std::min(avail, (int32_t)n_ctx_seq_ - 1 - (int32_t)s.cache.size());
        if (s.req.max_tokens > 0) avail = std::min(avail, s.req.max_tokens - s.n_generated - 1);
        if (avail <= 0) continue;
        DraftCandidate c;
        c.p = s.acceptance.p();
        c.n_avail = avail;
        c.n_min = s.req.draft_min >= 0 ? s.req.draft_min : spec_.n_min;
        cands.push_back(c);
        drafting.push_back(&s);
    }
    // Prompt tokens waiting for a step take its room: drafts wait (the step budget
    // exists so that the streams' steps stay short while a prompt is read).
    if (cands.empty() || prompts_waiting) return;
    // One ubatch holds the whole step: a draft split across two would let the second
    // reuse sliding-window cells the first had still needed after a rollback.
    const int32_t max_rows = (int32_t)std::min<uint32_t>(n_batch_, llama_n_ubatch(ctx_));
    // Beside other streams a step may not grow past the step budget for drafts.
    const double max_ms = n_gen > 1 && step_budget_ms > 0.0
                              ? std::max(step_budget_ms, step_cost_.predict(n_gen))
                              : 0.0;
    choose_draft_lengths(cands, step_cost_, n_gen, max_rows, max_ms);
    for (size_t i = 0; i < cands.size(); ++i) {
        const auto &prop = drafting[i]->acceptance.proposal();
        drafting[i]->draft.assign(prop.begin(), prop.begin() + cands[i].chosen);
    }
}

void Engine::verify_draft(Slot &slot, int32_t first_row, std::vector<Event> &out) {
    // The decode put `next` and the whole draft in the cache; the bookkeeping
    // takes the draft back and re-adds each token the sampler agrees with.
    const std::vector<llama_token> draft = std::move(slot.draft);
    slot.draft.clear();
    const size_t n = draft.size();
    slot.cache.resize(slot.cache.size() - n);
    size_t j = 0;
    while (true) {
        // Emitting may end the request (stop token, max_tokens, the context's end).
        const llama_token tok = sample_slot(slot, llama_get_logits_ith(ctx_, first_row + (int32_t)j), out);
        if (tok < 0 || !slot.busy || j >= n || tok != draft[j]) break;
        // The sampled token is the drafted one, already decoded at this position.
        slot.cache.push_back(draft[j]);
        slot.has_next = false;
        ++j;
    }
    // Rejected draft tokens (and any after an ending) leave the cache.
    llama_memory_seq_rm(mem_, slot.seq, (llama_pos)slot.cache.size(), -1);
    slot.n_drafted += (int32_t)n;
    slot.n_draft_accepted += (int32_t)j;
    stats_.n_drafted += (int64_t)n;
    stats_.n_draft_accepted += (int64_t)j;
    stats_.n_spec_steps++;
}

int32_t Engine::drop_drafts(int32_t from, int32_t n_total) {
    // A decode that failed is retried, possibly in pieces: drafts are optional,
    // so they leave the batch rather than be split from their sequence's first row.
    int32_t w = from;
    for (int32_t k = from; k < n_total; ++k) {
        if (row_is_draft_[k]) {
            owner_[k]->draft.clear();
            continue;
        }
        move_row(k, w++);
    }
    batch_.n_tokens = w;
    return w;
}

}  // namespace sarai
