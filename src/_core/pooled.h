// Many short inputs pooled together on one llama_context: each input is one
// sequence, decoded whole, as many per llama_decode as the batch and the
// sequence count allow, and read back per sequence. Rerank scores (rank pooling:
// a classifier head's n_cls_out values per input) run here; any other pooling
// gives one n_embd vector per input.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
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
    // physical batch. InvalidArgument for a pooling without one vector per sequence.
    PooledBatch(std::shared_ptr<Model> model, const ContextParams &p, uint32_t n_seq);
    ~PooledBatch();
    PooledBatch(const PooledBatch &) = delete;
    PooledBatch &operator=(const PooledBatch &) = delete;

    const Model &model() const { return *model_; }
    uint32_t n_batch() const { return n_batch_; }  // the longest input, in tokens
    uint32_t n_seq() const { return n_seq_; }
    int32_t pooling_type() const { return pooling_; }  // the context's (the GGUF's where unspecified)
    uint32_t n_out() const { return n_out_; }          // floats per input: n_cls_out for rank, else n_embd

    // From any thread: the running call stops at its next decode with Cancelled.
    void cancel() { abort_.store(true); }

    // One vector of n_out() floats per input, in order. Inputs are packed in order
    // into decodes of at most n_batch tokens and n_seq sequences; the KV cache is
    // cleared after each, so a result does not depend on the call's other inputs.
    // llama.cpp may pick other CPU kernels for a batch of another size, though (flash
    // attention's: ~1e-3 on a random-weight score; without it, float rounding). InvalidArgument for an
    // empty input, one longer than n_batch or a token outside the vocabulary.
    // `interrupt` runs between decodes (it may throw to stop, e.g. for Ctrl-C).
    std::vector<std::vector<float>> run(const std::vector<std::vector<llama_token>> &inputs,
                                        const std::function<void()> &interrupt = {});

    PerfCounters perf() const { return perf_of(ctx_); }

  private:
    static bool abort_cb(void *data) {
        return static_cast<PooledBatch *>(data)->abort_.load(std::memory_order_relaxed);
    }
    void decode_group(const std::vector<std::vector<llama_token>> &inputs, size_t first, size_t count,
                      size_t n_tokens, std::vector<std::vector<float>> &out);

    std::shared_ptr<Model> model_;
    llama_context *ctx_ = nullptr;
    llama_batch batch_{};
    uint32_t n_batch_ = 0;
    uint32_t n_seq_ = 1;
    int32_t pooling_ = LLAMA_POOLING_TYPE_UNSPECIFIED;
    uint32_t n_out_ = 0;
    std::atomic<bool> abort_{false};
};

}  // namespace sarai
