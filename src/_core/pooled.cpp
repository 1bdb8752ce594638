#include "pooled.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "errors.h"
#include "log.h"

namespace sarai {

namespace {
constexpr uint32_t kMaxSeq = 256;  // llama.cpp's LLAMA_MAX_SEQ (not in its public header)
constexpr auto kWaitTick = std::chrono::milliseconds(50);  // how often a waiting call runs its interrupt
}  // namespace

struct PooledBatch::Call {
    std::vector<std::vector<llama_token>> inputs;  // a copy: the caller may leave (interrupted) mid-decode
    std::vector<std::vector<float>> out;
    size_t next = 0;  // inputs read back so far (decodes take them in order)
    bool done = false;
    std::exception_ptr error;
};

PooledBatch::PooledBatch(std::shared_ptr<Model> model, const ContextParams &p, uint32_t n_seq)
    : model_(std::move(model)), n_seq_(n_seq) {
    if (!p.embeddings) throw InvalidArgument("a pooled batch needs a context with embeddings");
    if (p.pooling_type == LLAMA_POOLING_TYPE_NONE)
        throw InvalidArgument("pooling 'none' gives one vector per token, not one per input");
    if (n_seq < 1 || n_seq > kMaxSeq) throw InvalidArgument("n_seq must be in [1, " + std::to_string(kMaxSeq) + "]");
    // llama.cpp sizes its worst-case graph for n_ubatch tokens split evenly over n_seq
    // sequences; when n_seq does not divide n_ubatch, mean and rank pooling's matrix gets
    // the wrong shape and ggml aborts the process. So the sequence count gives way: the
    // largest divisor of the window up to the one asked for (a window of 2^k any power of 2).
    while (n_seq_ > 1 && p.n_batch % n_seq_ != 0) --n_seq_;
    ContextParams q = p;
    q.n_ctx = p.n_batch;  // one batch at a time: every sequence of a decode, nothing kept after it
    q.n_ubatch = p.n_batch;
    // Unified: the sequences of a decode share the batch's cells instead of n_batch / n_seq each.
    auto params = make_llama_params(q, n_seq_, true);
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
    if (inputs.empty()) return {};
    auto call = std::make_shared<Call>();
    call->inputs = inputs;
    call->out.resize(inputs.size());
    std::unique_lock<std::mutex> lk(mu_);
    queue_.push_back(call);
    while (!call->done) {
        if (!leading_) {
            lead(lk, call, interrupt);
            break;
        }
        cv_.wait_for(lk, kWaitTick);
        if (!call->done && interrupt) {
            lk.unlock();
            try {
                interrupt();
            } catch (...) {
                lk.lock();
                forget(call);
                throw;
            }
            lk.lock();
        }
    }
    if (call->error) std::rethrow_exception(call->error);
    return std::move(call->out);
}

void PooledBatch::lead(std::unique_lock<std::mutex> &lk, const std::shared_ptr<Call> &own,
                       const std::function<void()> &interrupt) {
    leading_ = true;
    try {
        while (!own->done) {
            // The next inputs in queue order, while they fit: a call's inputs stay in order,
            // and a later call's never jump ahead of an earlier call's that did not fit.
            std::vector<std::pair<std::shared_ptr<Call>, size_t>> group;
            size_t n_tokens = 0;
            for (const auto &c : queue_) {
                size_t i = c->next;
                for (; i < c->inputs.size() && group.size() < n_seq_; ++i) {
                    const size_t len = c->inputs[i].size();
                    if (n_tokens + len > n_batch_) break;
                    n_tokens += len;
                    group.emplace_back(c, i);
                }
                if (i < c->inputs.size()) break;
            }
            lk.unlock();
            std::exception_ptr error;
            try {
                decode_group(group, n_tokens);
            } catch (...) {
                error = std::current_exception();
            }
            lk.lock();
            for (const auto &[c, i] : group) {
                if (error) {
                    c->error = error;
                    c->done = true;
                } else if (++c->next == c->inputs.size()) {
                    c->done = true;
                }
            }
            queue_.erase(std::remove_if(queue_.begin(), queue_.end(), [](const auto &c) { return c->done; }),
                         queue_.end());
            cv_.notify_all();
            if (!own->done && interrupt) {
                lk.unlock();
                interrupt();
                lk.lock();
            }
        }
    } catch (...) {  // the interrupt threw (without the lock)
        if (!lk.owns_lock()) lk.lock();
        forget(own);
        leading_ = false;
        cv_.notify_all();
        throw;
    }
    leading_ = false;
    cv_.notify_all();  // a waiting call takes the lead
}

void PooledBatch::forget(const std::shared_ptr<Call> &call) {
    queue_.erase(std::remove(queue_.begin(), queue_.end(), call), queue_.end());
}

void PooledBatch::decode_group(const std::vector<std::pair<std::shared_ptr<Call>, size_t>> &group,
                               size_t n_tokens) {
    int32_t row = 0;
    for (size_t s = 0; s < group.size(); ++s) {
        const auto &in = group[s].first->inputs[group[s].second];
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
    n_decodes_.fetch_add(1, std::memory_order_relaxed);
    if (rc != 0) {
        llama_memory_clear(mem, true);
        throw std::runtime_error(with_reason("llama_decode failed with code " + std::to_string(rc)));
    }
    for (size_t s = 0; s < group.size(); ++s) {
        const float *v = llama_get_embeddings_seq(ctx_, (llama_seq_id)s);
        if (!v) throw std::runtime_error("llama.cpp returned no pooled output for a sequence");
        group[s].first->out[group[s].second].assign(v, v + n_out_);  // only the leader writes a call's out
    }
    llama_memory_clear(mem, true);
}

}  // namespace sarai
