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
    // The engine's: sequences decoded together, and the step budget in ms (0: off;
    // see Engine::set_step_budget_ms). Context and PooledBatch choose their own.
    int32_t n_seq_max = 1;
    double step_budget_ms = 0.0;
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

    void set_threads(int32_t n_threads, int32_t n_threads_batch);
    void clear();

    // Called between two batches of a prompt (and after an aborted decode) on
    // the thread that called eval(); it may throw to stop the evaluation. The
    // binding uses it to honour Ctrl-C (PyErr_CheckSignals), which needs the
    // GIL and so has no place in this file.
    using Interrupt = std::function<void()>;

    // Evaluates `tokens` after the cached ones, n_batch at a time. Logits are
    // kept for the last token only (or for all of them when `all_logits`, for
    // logprobs and echo). Throws InvalidArgument for bad tokens or a prompt that
    // does not fit, and what `interrupt` throws.
    void eval(const std::vector<llama_token> &tokens, bool all_logits, const Interrupt &interrupt = {});

    // Logits row i of the last batch (n_vocab floats; -1 = last). Throws when none.
    const float *logits(int32_t i) const;
    // The sequence embedding (or the last token's): n_embd_out() floats.
    const float *embeddings() const;
    // Floats in embeddings(): a classifier's n_cls_out scores under rank pooling, else n_embd.
    uint32_t n_embd_out() const;

    PerfCounters perf() const { return perf_of(ctx_); }
    void perf_reset() { llama_perf_context_reset(ctx_); }

  private:
    std::shared_ptr<Model> model_;
    llama_context *ctx_ = nullptr;
    uint32_t n_ctx_ = 0;
    uint32_t n_batch_ = 0;
    std::vector<llama_token> tokens_;  // evaluated so far
};

}  // namespace sarai
