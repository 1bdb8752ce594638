#include "pooled.h"

#include <algorithm>
#include <string>

#include "errors.h"
#include "log.h"

namespace sarai {

namespace {
constexpr uint32_t kMaxSeq = 256;  // llama.cpp's LLAMA_MAX_SEQ (not in its public header)
}  // namespace

PooledBatch::PooledBatch(std::shared_ptr<Model> model, const ContextParams &p, uint32_t n_seq)
    : model_(std::move(model)), n_seq_(n_seq) {
    if (!p.embeddings) throw InvalidArgument("a pooled batch needs a context with embeddings");
    if (p.pooling_type == LLAMA_POOLING_TYPE_NONE)
        throw InvalidArgument("pooling 'none' gives one vector per token, not one per input");
    if (n_seq < 1 || n_seq > kMaxSeq) throw InvalidArgument("n_seq must be in [1, " + std::to_string(kMaxSeq) + "]");
    ContextParams q = p;
    q.n_ctx = p.n_batch;  // one batch at a time: every sequence of a decode, nothing kept after it
    q.n_ubatch = p.n_batch;
    // Unified: the sequences of a decode share the batch's cells instead of n_batch / n_seq each.
    auto params = make_llama_params(q, n_seq, true);
    params.abort_callback = &PooledBatch::abort_cb;
    params.abort_callback_data = this;
    clear_last_error();
    ctx_ = llama_init_from_model(model_->get(), params);
    if (!ctx_) throw std::runtime_error(with_reason("failed to create the llama.cpp context"));
    pooling_ = llama_pooling_type(ctx_);
    if (pooling_ == LLAMA_POOLING_TYPE_NONE) {
        llama_free(ctx_);
        ctx_ = nullptr;
        throw InvalidArgument("this model's pooling is 'none' (one vector per token): name a pooling type");
    }
    n_batch_ = llama_n_batch(ctx_);
    n_out_ = pooling_ == LLAMA_POOLING_TYPE_RANK ? llama_model_n_cls_out(model_->get())
                                                 : (uint32_t)llama_model_n_embd_out(model_->get());
    batch_ = llama_batch_init((int32_t)n_batch_, 0, 1);
}

PooledBatch::~PooledBatch() {
    llama_batch_free(batch_);
    if (ctx_) llama_free(ctx_);
}

std::vector<std::vector<float>> PooledBatch::run(const std::vector<std::vector<llama_token>> &inputs,
                                                 const std::function<void()> &interrupt) {
    for (size_t i = 0; i < inputs.size(); ++i) {
        const auto &in = inputs[i];
        if (in.empty()) throw InvalidArgument("input " + std::to_string(i) + " has no tokens");
        if (in.size() > n_batch_) {
            throw InvalidArgument("input " + std::to_string(i) + " has " + std::to_string(in.size()) +
                                  " tokens; at most " + std::to_string(n_batch_) + " fit one batch");
        }
        for (auto t : in) model_->check_token(t);
    }
    abort_.store(false);
    std::vector<std::vector<float>> out(inputs.size());
    size_t first = 0;
    while (first < inputs.size()) {
        size_t count = 0, n_tokens = 0;
        while (first + count < inputs.size() && count < n_seq_ && n_tokens + inputs[first + count].size() <= n_batch_) {
            n_tokens += inputs[first + count].size();
            ++count;
        }
        decode_group(inputs, first, count, n_tokens, out);
        first += count;
        if (interrupt && first < inputs.size()) interrupt();
    }
    return out;
}

void PooledBatch::decode_group(const std::vector<std::vector<llama_token>> &inputs, size_t first, size_t count,
                               size_t n_tokens, std::vector<std::vector<float>> &out) {
    int32_t row = 0;
    for (size_t s = 0; s < count; ++s) {
        const auto &in = inputs[first + s];
        for (size_t i = 0; i < in.size(); ++i, ++row) {
            batch_.token[row] = in[i];
            batch_.pos[row] = (llama_pos)i;
            batch_.n_seq_id[row] = 1;
            batch_.seq_id[row][0] = (llama_seq_id)s;
            batch_.logits[row] = true;  // pooling reads every token's hidden state
        }
    }
    batch_.n_tokens = (int32_t)n_tokens;
    llama_memory_t mem = llama_get_memory(ctx_);
    llama_memory_clear(mem, true);
    clear_last_error();
    const int32_t rc = llama_decode(ctx_, batch_);
    if (rc != 0) {
        llama_memory_clear(mem, true);
        if (rc == 2) throw Cancelled("cancelled");
        throw std::runtime_error(with_reason("llama_decode failed with code " + std::to_string(rc)));
    }
    for (size_t s = 0; s < count; ++s) {
        const float *v = llama_get_embeddings_seq(ctx_, (llama_seq_id)s);
        if (!v) throw std::runtime_error("llama.cpp returned no pooled output for a sequence");
        out[first + s].assign(v, v + n_out_);
    }
    llama_memory_clear(mem, true);
}

}  // namespace sarai
