// One sequence on one llama_context: the load probe, bench and tune. Text
// generation runs on the engine (engine.h), many sequences per context;
// embeddings and rerank on PooledBatch (pooled.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"
#include "model.h"
#include "sampler.h"

namespace sarai {

struct ContextParams {
    uint32_t n_ctx = 512;
    uint32_t n_batch = 512;
    uint32_t n_ubatch = 512;
    int32_t n_threads = 1;
    int32_t n_threads_batch = 1;
    int32_t type_k = GGML_TYPE_F16;
    int32_t type_v = GGML_TYPE_F16;
    int32_t flash_attn = LLAMA_FLASH_ATTN_TYPE_AUTO;
    bool embeddings = false;
    int32_t pooling_type = LLAMA_POOLING_TYPE_UNSPECIFIED;
    bool swa_full = false;
};

// llama_context_params from ours; shared by Context and Engine so that the
// two paths configure llama.cpp identically.
llama_context_params make_llama_params(const ContextParams &p, uint32_t n_seq_max, bool kv_unified);

struct PerfCounters {
    double t_load_ms = 0, t_p_eval_ms = 0, t_eval_ms = 0;
    int32_t n_p_eval = 0, n_eval = 0, n_reused = 0;
};
PerfCounters perf_of(const llama_context *ctx);

// Evaluates `tokens` for sequence `seq` at positions start, start+1, ... in
// chunks of at most `n_batch`, reusing `batch` (capacity >= n_batch). Logits are
// kept for every token when `all_logits`, else for the last one. After each
// decoded chunk `on_chunk(offset, n)` runs (the caller extends its token record,
// checks for Ctrl-C). A failed decode's partial KV is removed first; then it
// throws runtime_error (no room: rc 1; other codes), or returns false when the
// decode was aborted (rc 2) so the caller can say why. Shared by Context::eval
// and Engine::eval.
bool decode_tokens(llama_context *ctx, llama_batch &batch, uint32_t n_batch, llama_seq_id seq, size_t start,
                   const std::vector<llama_token> &tokens, bool all_logits,
                   const std::function<void(size_t, size_t)> &on_chunk);

class Context {
  public:
    Context(std::shared_ptr<Model> model, const ContextParams &p);
    ~Context();
    Context(const Context &) = delete;
    Context &operator=(const Context &) = delete;

    const Model &model() const { return *model_; }
    uint32_t n_ctx() const { return n_ctx_; }
    uint32_t n_batch() const { return n_batch_; }
    const std::vector<llama_token> &tokens() const { return tokens_; }

    // cancel() may come from any thread; the flag stays set until the next
    // call starts (reset_cancel), so a cancel between two decodes is not lost.
    void cancel() { abort_.store(true); }
    void reset_cancel() { abort_.store(false); }
    bool cancelled() const { return abort_.load(); }

    void set_threads(int32_t n_threads, int32_t n_threads_batch);

    // Drops everything after the first `keep` tokens from the KV cache. Returns
    // false when the memory cannot cut there (e.g. sliding-window caches): the
    // caller then clears and re-evaluates.
    bool truncate(size_t keep);
    void clear();

    // Called between two batches of a prompt (and after an aborted decode) on
    // the thread that called eval(); it may throw to stop the evaluation. The
    // binding uses it to honour Ctrl-C (PyErr_CheckSignals), which needs the
    // GIL and so has no place in this file.
    using Interrupt = std::function<void()>;

    // Evaluates `tokens` after the cached ones, n_batch at a time. Logits are
    // kept for the last token only (or for all of them when `all_logits`, for
    // logprobs and echo). Throws Cancelled after cancel(), InvalidArgument for
    // bad tokens or a prompt that does not fit.
    void eval(const std::vector<llama_token> &tokens, bool all_logits, const Interrupt &interrupt = {});

    // Logits row i of the last batch (n_vocab floats; -1 = last). Throws when none.
    const float *logits(int32_t i) const;
    // The sequence embedding (or the last token's): n_embd_out() floats.
    const float *embeddings() const;
    // Floats in embeddings(): a classifier's n_cls_out scores under rank pooling, else n_embd.
    uint32_t n_embd_out() const;

    // One generation step: choose a token from the last logits (or from
    // `logits` when Python logits processors rewrote them), accept it, and
    // return it with its end-of-generation flag. The token is not evaluated
    // yet, so a caller that stops on it wastes no decode.
    std::pair<llama_token, bool> sample(Sampler &sampler, const float *logits, size_t n_logits);

    // Appends a token's text and returns the complete UTF-8 bytes so far.
    std::string push_text(llama_token tok) { return utf8_.push(model_->piece(tok, false)); }
    std::string flush_text() { return utf8_.flush(); }

    std::string state() const;
    void set_state(const std::string &data, const std::vector<llama_token> &tokens);

    PerfCounters perf() const { return perf_of(ctx_); }
    void perf_reset() { llama_perf_context_reset(ctx_); }

  private:
    static bool abort_cb(void *data) { return static_cast<Context *>(data)->abort_.load(std::memory_order_relaxed); }

    std::shared_ptr<Model> model_;
    llama_context *ctx_ = nullptr;
    uint32_t n_ctx_ = 0;
    uint32_t n_batch_ = 0;
    std::vector<llama_token> tokens_;
    Utf8Stream utf8_;
    std::atomic<bool> abort_{false};
};

}  // namespace sarai
