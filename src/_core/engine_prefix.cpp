// Prefix reuse: which cached tokens a new request keeps in its sequence. Its own
// cache's common prefix, a longer one shared from another sequence (seq_cp), or
// a state from the state cache (engine_state.cpp); sliding-window caches keep a
// prefix only while its window is intact. Called from admit_locked (engine.cpp)
// with the lock held, on the driving thread.
#include <algorithm>

#include "engine.h"
#include "engine_slot.h"

namespace sarai {

void Engine::choose_prefix(Slot &slot, const std::vector<llama_token> &prompt) {
    // The last prompt token is always evaluated: its logits give the first token.
    const size_t limit = prompt.size() - 1;
    size_t keep = std::min(common_prefix(slot.cache, prompt), limit);
    // The sequence's tokens past the shared prefix are about to be cut: the
    // state cache keeps them for their conversation's next turn.
    if (keep < slot.cache.size()) stash(slot);
    // A longer prefix cached by another sequence (busy or not) is shared with
    // seq_cp: in a unified cache that tags the same cells with this sequence
    // too, no tensor copy. Not for sliding-window or recurrent memories, whose
    // old positions may be gone or cannot be shared by position range.
    const bool can_share = n_swa_ == 0 && !llama_model_is_recurrent(model_->get()) &&
                           !llama_model_is_hybrid(model_->get());
    const Slot *best = nullptr;
    size_t best_len = keep;
    if (can_share) {
        for (const auto &o : slots_) {
            if (o.get() == &slot) continue;
            const size_t c = std::min(common_prefix(o->cache, prompt), limit);
            if (c > best_len) {
                best_len = c;
                best = o.get();
            }
        }
    }
    // A cached state that gives more than the live sequences is restored instead.
    if (restore(slot, prompt, std::max(best_len, own_prefix(slot, keep)))) return;
    if (slot.cache.empty()) keep = 0;  // a failed restore emptied the sequence
    if (best) {
        llama_memory_seq_rm(mem_, slot.seq, -1, -1);
        llama_memory_seq_cp(mem_, best->seq, slot.seq, 0, (llama_pos)best_len);
        if (llama_memory_seq_pos_max(mem_, slot.seq) == (llama_pos)best_len - 1) {
            slot.cache.assign(prompt.begin(), prompt.begin() + (long)best_len);
            slot.n_reused = (int32_t)best_len;
            slot.prompt_done = best_len;
            return;
        }
        llama_memory_seq_rm(mem_, slot.seq, -1, -1);  // the other's cells have a hole: no sharing
        slot.cache.clear();
        keep = 0;
    }
    if (!llama_memory_seq_rm(mem_, slot.seq, (llama_pos)keep, -1)) {
        // The memory cannot cut there (recurrent state): start over.
        llama_memory_seq_rm(mem_, slot.seq, -1, -1);
        keep = 0;
    }
    if (keep > 0 && llama_memory_seq_pos_max(mem_, slot.seq) != (llama_pos)keep - 1) {
        // The cells do not hold the whole prefix (a restored state with a hole in its
        // positions): decoding after it would fail. The bookkeeping gives way to the cache.
        llama_memory_seq_rm(mem_, slot.seq, -1, -1);
        keep = 0;
    }
    if (keep > 0 && own_prefix(slot, keep) < keep) {
        llama_memory_seq_rm(mem_, slot.seq, -1, -1);
        keep = 0;
    }
    slot.cache.resize(keep);
    slot.n_reused = (int32_t)keep;
    slot.prompt_done = keep;
}

size_t Engine::own_prefix(const Slot &slot, size_t keep) const {
    // A sliding-window cache drops old cells: the first `keep` tokens are usable
    // only while the window of the next token (position keep) is still there:
    // llama.cpp masks position p0 for p1 when p1 - p0 >= n_swa, so the cells from
    // keep - n_swa + 1 on (a chunked window needs fewer). The sequence's own last
    // window is always intact: a finished sequence continues where it ended.
    if (keep == 0 || n_swa_ == 0) return keep;
    const llama_pos pos_min = llama_memory_seq_pos_min(mem_, slot.seq);
    const llama_pos thold = std::max<llama_pos>(0, (llama_pos)keep - n_swa_ + 1);
    return pos_min < 0 || pos_min > thold ? 0 : keep;
}

}  // namespace sarai
