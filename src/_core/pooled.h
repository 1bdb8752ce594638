// Many short inputs pooled together on one llama_context: each input is one
// sequence, decoded whole, as many per llama_decode as the batch and the
// sequence count allow, and read back per sequence. Rerank scores (rank pooling:
// a classifier head's n_cls_out values per input) run here; any other pooling
// gives one n_embd vector per input.
//
// Calls from several threads are served together, the way the engine batches
// sequences: the inputs of every waiting call are packed into the same decodes
// (continuous batching for pooled requests: four clients sending one text each
// share one llama_decode instead of taking turns).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "context.h"
#include "llama.h"
#include "model.h"

namespace sarai {

class PooledBatch {
  public:
    // `p` must ask for embeddings with a pooling that yields one vector per sequence
    // (not NONE; UNSPECIFIED takes the GGUF's, which must not be NONE either); its
    // n_ctx is ignored: the context holds one batch (n_batch cells, shared by up to
    // `n_seq` sequences). n_ubatch is raised to n_batch: a pooled input must fit one
    // physical batch. n_seq() may be less than `n_seq`: the largest count that divides
    // n_batch (llama.cpp's graph for mean and rank pooling needs it). InvalidArgument for
    // a pooling without one vector per sequence.
    PooledBatch(std::shared_ptr<Model> model, const ContextParams &p, uint32_t n_seq);
    ~PooledBatch();
    PooledBatch(const PooledBatch &) = delete;
    PooledBatch &operator=(const PooledBatch &) = delete;

    const Model &model() const { return *model_; }
    uint32_t n_batch() const { return n_batch_; }  // the longest input, in tokens
    uint32_t n_seq() const { return n_seq_; }
    int32_t pooling_type() const { return pooling_; }  // the context's (the GGUF's where unspecified)
    uint32_t n_out() const { return n_out_; }          // floats per input: n_cls_out for rank, else n_embd

    // One vector of n_out() floats per input, in order. Safe from many threads at once.
    //
    // Inputs are packed in arrival order (this call's after those of calls already
    // waiting) into decodes of at most n_batch tokens and n_seq sequences; the KV
    // cache is cleared after each, so a result does not depend on the other inputs
    // it was decoded with. llama.cpp may pick other CPU kernels for a batch of
    // another size, though (flash attention's: ~1e-3 on a random-weight score;
    // without it, float rounding).
    //
    // The first caller to find no decode running decodes for everyone waiting until
    // its own inputs are done, then hands that role on; every other call returns as
    // soon as its own vectors are read. A failed decode fails every call it held
    // inputs of. InvalidArgument (before anything is queued) for an empty input, one
    // longer than n_batch or a token outside the vocabulary. `interrupt` runs between
    // decodes and, while waiting, every 50 ms (it may throw to stop, e.g. for Ctrl-C):
    // its exception ends only its own call.
    std::vector<std::vector<float>> run(const std::vector<std::vector<llama_token>> &inputs,
                                        const std::function<void()> &interrupt = {});

    PerfCounters perf() const { return perf_of(ctx_); }
    // llama_decode calls so far (inputs / decodes: how much callers shared).
    uint64_t n_decodes() const { return n_decodes_.load(std::memory_order_relaxed); }

  private:
    struct Call;  // one waiting run(): its inputs, how many are done, its vectors or error
    // Decode the queued calls' remaining inputs until `own` is done; `lk` (on mu_)
    // is held on entry and on return, and released around each decode.
    void lead(std::unique_lock<std::mutex> &lk, const std::shared_ptr<Call> &own,
              const std::function<void()> &interrupt);
    // One llama_decode of `group` (calls and input indices, one sequence each, n_tokens
    // in all) into those calls' vectors; without mu_ held.
    void decode_group(const std::vector<std::pair<std::shared_ptr<Call>, size_t>> &group, size_t n_tokens);
    void forget(const std::shared_ptr<Call> &call);  // out of queue_ (mu_ held)

    std::shared_ptr<Model> model_;
    llama_context *ctx_ = nullptr;
    llama_batch batch_{};
    uint32_t n_batch_ = 0;
    uint32_t n_seq_ = 1;
    int32_t pooling_ = LLAMA_POOLING_TYPE_UNSPECIFIED;
    uint32_t n_out_ = 0;

    std::mutex mu_;                            // guards queue_, leading_ and every Call's state
    std::condition_variable cv_;               // a call finished, or the leading role is free
    std::deque<std::shared_ptr<Call>> queue_;  // calls with inputs not yet decoded, in order
    bool leading_ = false;                     // a caller is decoding (ctx_ and batch_ are its)
    std::atomic<uint64_t> n_decodes_{0};
};

}  // namespace sarai
