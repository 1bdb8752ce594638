#include "context.h"

#include <algorithm>
#include <cstring>

#include "errors.h"
#include "log.h"

namespace sarai {

llama_context_params make_llama_params(const ContextParams &p, uint32_t n_seq_max, bool kv_unified) {
    auto params = llama_context_default_params();
    params.n_ctx = p.n_ctx;
    params.n_batch = p.n_batch;
    params.n_ubatch = p.n_ubatch;
    params.n_seq_max = n_seq_max;
    params.kv_unified = kv_unified;
    params.n_threads = p.n_threads;
    params.n_threads_batch = p.n_threads_batch;
    params.type_k = (ggml_type)p.type_k;
    params.type_v = (ggml_type)p.type_v;
    params.flash_attn_type = (llama_flash_attn_type)p.flash_attn;
    params.embeddings = p.embeddings;
    params.pooling_type = static_cast<enum llama_pooling_type>(p.pooling_type);
    params.swa_full = p.swa_full;
    params.offload_kqv = false;
    params.no_perf = false;
    return params;
}

PerfCounters perf_of(const llama_context *ctx) {
    const auto d = llama_perf_context(ctx);
    PerfCounters out;
    out.t_load_ms = d.t_load_ms;
    out.t_p_eval_ms = d.t_p_eval_ms;
    out.t_eval_ms = d.t_eval_ms;
    out.n_p_eval = d.n_p_eval;
    out.n_eval = d.n_eval;
    out.n_reused = d.n_reused;
    return out;
}

Context::Context(std::shared_ptr<Model> model, const ContextParams &p) : model_(std::move(model)) {
    // One sequence: kv_unified is irrelevant there, llama.cpp's default stays.
    auto params = make_llama_params(p, 1, llama_context_default_params().kv_unified);
    clear_last_error();
    ctx_ = llama_init_from_model(model_->get(), params);
    if (!ctx_) throw std::runtime_error(with_reason("failed to create the llama.cpp context"));
    n_ctx_ = llama_n_ctx(ctx_);
    n_batch_ = llama_n_batch(ctx_);
}

Context::~Context() {
    if (ctx_) llama_free(ctx_);
}

void Context::set_threads(int32_t n_threads, int32_t n_threads_batch) {
    if (n_threads < 1 || n_threads_batch < 1) throw InvalidArgument("thread counts must be >= 1");
    llama_set_n_threads(ctx_, n_threads, n_threads_batch);
}

void Context::clear() {
    llama_memory_clear(llama_get_memory(ctx_), true);
    tokens_.clear();
}

bool decode_tokens(llama_context *ctx, llama_batch &batch, uint32_t n_batch, llama_seq_id seq, size_t start,
                   const std::vector<llama_token> &tokens, bool all_logits,
                   const std::function<void(size_t, size_t)> &on_chunk) {
    size_t done = 0;
    while (done < tokens.size()) {
        const size_t n = std::min<size_t>(n_batch, tokens.size() - done);
        for (size_t i = 0; i < n; ++i) {
            batch.token[i] = tokens[done + i];
            batch.pos[i] = (llama_pos)(start + done + i);
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = seq;
            batch.logits[i] = all_logits || (done + i + 1 == tokens.size());
        }
        batch.n_tokens = (int32_t)n;
        clear_last_error();
        const int32_t rc = llama_decode(ctx, batch);
        if (rc != 0) {
            // A failed or aborted decode may leave part of the chunk behind.
            llama_memory_seq_rm(llama_get_memory(ctx), seq, (llama_pos)(start + done), -1);
            if (rc == 2) return false;
            if (rc == 1) throw std::runtime_error("no room in the KV cache for the batch (context full)");
            throw std::runtime_error(with_reason("llama_decode failed with code " + std::to_string(rc)));
        }
        on_chunk(done, n);
        done += n;
    }
    return true;
}

void Context::eval(const std::vector<llama_token> &tokens, bool all_logits, const Interrupt &interrupt) {
    for (auto t : tokens) model_->check_token(t);
    if (tokens_.size() + tokens.size() > n_ctx_) {
        throw InvalidArgument("cannot evaluate " + std::to_string(tokens.size()) + " tokens after " +
                              std::to_string(tokens_.size()) + ": the context holds " + std::to_string(n_ctx_) +
                              " tokens");
    }
    // One batch for the whole call, refilled per chunk.
    llama_batch batch = llama_batch_init((int32_t)std::min<size_t>(n_batch_, std::max<size_t>(tokens.size(), 1)), 0, 1);
    struct Free {
        llama_batch &b;
        ~Free() { llama_batch_free(b); }
    } free_batch{batch};
    const bool ok = decode_tokens(ctx_, batch, n_batch_, 0, tokens_.size(), tokens, all_logits, [&](size_t off, size_t n) {
        tokens_.insert(tokens_.end(), tokens.begin() + (long)off, tokens.begin() + (long)(off + n));
        // Between batches: let the caller stop a long prompt (Ctrl-C).
        if (interrupt && off + n < tokens.size()) interrupt();
    });
    if (!ok) throw std::runtime_error("llama.cpp aborted the decode");  // no abort callback is set: never expected
    if (interrupt) interrupt();
}

const float *Context::logits(int32_t i) const {
    const float *row = llama_get_logits_ith(ctx_, i);
    if (!row) throw std::runtime_error("no logits available (evaluate a prompt first)");
    return row;
}

const float *Context::embeddings() const {
    const float *e = llama_get_embeddings_seq(ctx_, 0);
    if (!e) e = llama_get_embeddings_ith(ctx_, -1);
    if (!e) throw std::runtime_error("no embeddings available (was the context created with embedding=True?)");
    return e;
}

uint32_t Context::n_embd_out() const {
    return llama_pooling_type(ctx_) == LLAMA_POOLING_TYPE_RANK ? llama_model_n_cls_out(model_->get())
                                                               : (uint32_t)llama_model_n_embd_out(model_->get());
}

}  // namespace sarai
