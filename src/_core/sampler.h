// A sampler chain built from SamplerParams, with a plain argmax fast path for
// greedy decoding (the common case, and the one benchmarks measure).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"
#include "model.h"

namespace sarai {

struct SamplerParams {
    float temperature = 0.8f;
    int32_t top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    float typical_p = 1.0f;
    float repeat_penalty = 1.0f;
    float frequency_penalty = 0.0f;
    float presence_penalty = 0.0f;
    int32_t penalty_last_n = 64;
    uint32_t seed = LLAMA_DEFAULT_SEED;
    std::string grammar;
    std::string grammar_root = "root";
    // A lazy grammar constrains nothing until the output matches one of the
    // trigger regexes or produces one of the trigger tokens (tool calls after
    // free text). grammar_prefill is text the prompt already ends with that
    // the grammar must first consume (a chat template's generation prompt).
    bool grammar_lazy = false;
    std::vector<std::string> grammar_trigger_patterns;
    std::vector<int32_t> grammar_trigger_tokens;
    std::string grammar_prefill;
    std::vector<std::pair<int32_t, float>> logit_bias;
    int32_t mirostat = 0;
    float mirostat_tau = 5.0f;
    float mirostat_eta = 0.1f;
};

// Range checks the engine applies on submit (InvalidArgument with the field's
// name). The old Sampler constructor stays as lenient as it always was, so
// existing callers see no new errors.
void validate_sampler_params(const SamplerParams &p);

// First index of the largest logit (the greedy sampler's choice).
int32_t argmax(const float *x, int32_t n);

// Log-probabilities from a log-softmax of the raw logits (before any sampler,
// as OpenAI reports them): returns the logprob of `tok` and fills `top` with
// the n_top most likely (token, logprob), best first.
float token_logprobs(const float *raw, int32_t n_vocab, llama_token tok, int32_t n_top,
                     std::vector<std::pair<llama_token, float>> &top);

// The k best candidates of `logits` (n floats), best first: higher logit, and
// on equal logits the lower token id. What llama.cpp's top-k sampler keeps,
// found in one pass over the floats instead of a partial sort of n structs.
void top_k_candidates(const float *logits, int32_t n, int32_t k, std::vector<llama_token_data> &out);

class Sampler {
  public:
    // Throws InvalidArgument for an invalid grammar or logit-bias token. The
    // grammar and penalty samplers keep pointers into the model's vocabulary:
    // the model must outlive the sampler.
    Sampler(const Model &model, const SamplerParams &p);
    ~Sampler();
    Sampler(const Sampler &) = delete;
    Sampler &operator=(const Sampler &) = delete;

    llama_sampler *get() const { return chain_; }
    bool greedy_only() const { return greedy_only_; }
    int32_t n_vocab() const { return n_vocab_; }
    void accept(llama_token t) { llama_sampler_accept(chain_, t); }
    void reset() { llama_sampler_reset(chain_); }

    // Applies the chain to `logits` (n_vocab floats) and returns the chosen token.
    llama_token sample_from(const float *logits, int32_t n_vocab);

  private:
    void add(llama_sampler *s) { llama_sampler_chain_add(chain_, s); }
    llama_sampler *chain_ = nullptr;
    bool greedy_only_ = false;
    int32_t n_vocab_ = 0;
    // > 0 when top-k is the chain's first sampler that looks at the logits (no
    // bias, penalties or grammar before it): sample_from then hands the chain
    // only those k candidates, sorted, and llama.cpp's top-k keeps them as they are.
    int32_t leading_top_k_ = 0;
    std::vector<llama_token_data> cur_;
};

}  // namespace sarai
