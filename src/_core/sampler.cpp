#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>

#include "errors.h"
#include "grammar_check.h"
#include "llama-grammar.h"  // the matcher, compiled into this module (CMakeLists.txt)
#include "log.h"

namespace sarai {

void validate_sampler_params(const SamplerParams &p) {
    auto finite = [](float v, const char *name) {
        if (!std::isfinite(v)) throw InvalidArgument(std::string(name) + " must be a finite number");
    };
    finite(p.temperature, "temperature");
    finite(p.top_p, "top_p");
    finite(p.min_p, "min_p");
    finite(p.typical_p, "typical_p");
    finite(p.repeat_penalty, "repeat_penalty");
    finite(p.frequency_penalty, "frequency_penalty");
    finite(p.presence_penalty, "presence_penalty");
    finite(p.mirostat_tau, "mirostat_tau");
    finite(p.mirostat_eta, "mirostat_eta");
    if (p.top_k < 0) throw InvalidArgument("top_k must be >= 0 (0 = off)");
    if (p.top_p < 0.0f || p.top_p > 1.0f) throw InvalidArgument("top_p must be in [0, 1]");
    if (p.min_p < 0.0f || p.min_p > 1.0f) throw InvalidArgument("min_p must be in [0, 1]");
    if (p.typical_p <= 0.0f || p.typical_p > 1.0f) throw InvalidArgument("typical_p must be in (0, 1]");
    if (p.repeat_penalty <= 0.0f) throw InvalidArgument("repeat_penalty must be > 0");
    if (p.penalty_last_n < -1) throw InvalidArgument("penalty_last_n must be >= -1 (-1 = the whole context)");
    if (p.mirostat < 0 || p.mirostat > 2) throw InvalidArgument("mirostat must be 0, 1 or 2");
    for (const auto &b : p.logit_bias)
        if (std::isnan(b.second)) throw InvalidArgument("logit_bias values must not be NaN");
}

// Blocks of 16 reduce with a branch-free max the compiler vectorises; only a
// block that beats the best so far is searched for its index.
int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    float best_val = x[0];
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        float m = x[i];
        for (int j = 1; j < 16; ++j) m = x[i + j] > m ? x[i + j] : m;
        if (m > best_val) {
            for (int j = 0; j < 16; ++j) {
                if (x[i + j] == m) {
                    best = i + j;
                    break;
                }
            }
            best_val = m;
        }
    }
    for (; i < n; ++i) {
        if (x[i] > best_val) {
            best_val = x[i];
            best = i;
        }
    }
    return best;
}

void top_k_candidates(const float *x, int32_t n, int32_t k, std::vector<llama_token_data> &out) {
    k = std::max(0, std::min(k, n));
    out.clear();
    if (k == 0) return;
    // A heap of the k best so far ordered by `better`, so its front is the
    // worst kept and `thr` the logit a new candidate must beat. Scanning ids
    // upwards, an equal logit comes with a higher id and loses the tie: strict
    // > is the whole test.
    auto better = [](const llama_token_data &a, const llama_token_data &b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    };
    out.reserve((size_t)k);
    int32_t i = 0;
    for (; i < n && (int32_t)out.size() < k; ++i) {
        out.push_back({i, x[i], 0.0f});
        std::push_heap(out.begin(), out.end(), better);
    }
    float thr = out.front().logit;
    // Blocks of 16: a branch-free max the compiler vectorises; a block whose
    // max does not beat the threshold (nearly all of them) is skipped whole.
    for (; i + 16 <= n; i += 16) {
        float m = x[i];
        for (int j = 1; j < 16; ++j) m = x[i + j] > m ? x[i + j] : m;
        if (!(m > thr)) continue;
        for (int j = 0; j < 16; ++j) {
            if (x[i + j] > thr) {
                std::pop_heap(out.begin(), out.end(), better);
                out.back() = {i + j, x[i + j], 0.0f};
                std::push_heap(out.begin(), out.end(), better);
                thr = out.front().logit;
            }
        }
    }
    for (; i < n; ++i) {
        if (x[i] > thr) {
            std::pop_heap(out.begin(), out.end(), better);
            out.back() = {i, x[i], 0.0f};
            std::push_heap(out.begin(), out.end(), better);
            thr = out.front().logit;
        }
    }
    std::sort_heap(out.begin(), out.end(), better);  // ascending by `better`: best first
}

float token_logprobs(const float *raw, int32_t n_vocab, llama_token tok, int32_t n_top,
                     std::vector<std::pair<llama_token, float>> &top) {
    float mx = raw[0];
    for (int32_t i = 1; i < n_vocab; ++i) mx = std::max(mx, raw[i]);
    double sum = 0.0;  // double: 262k terms summed in float lose digits
    for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp((double)(raw[i] - mx));
    const float lse = mx + (float)std::log(sum);
    top.clear();
    if (n_top > 0) {
        std::vector<llama_token_data> best;
        top_k_candidates(raw, n_vocab, n_top, best);
        for (const auto &c : best) top.emplace_back(c.id, c.logit - lse);
    }
    return raw[tok] - lse;
}

namespace {

// Keeps a byte-fallback vocabulary's output valid UTF-8. llama.cpp's grammars read
// bytes as code points without checking them, so a model spelling text in byte
// tokens can write a surrogate (ED A0 80), an overlong form or a stray continuation
// byte inside a grammar's "any character": text that no JSON reader takes, or
// that reads back as several U+FFFD where the grammar counted one character. Placed
// before the grammar, this bans the byte tokens that cannot continue valid UTF-8,
// and, in the middle of a character, every token but its continuation bytes.
struct Utf8Guard {
    const Model *model;
    int need = 0;                    // continuation bytes still to come
    unsigned char lo = 0x80, hi = 0xBF;  // the range the next one must be in

    bool fits(unsigned char b) const {
        if (need > 0) return b >= lo && b <= hi;
        return b < 0x80 || (b >= 0xC2 && b <= 0xF4);
    }
    void take(unsigned char b) {
        if (!fits(b)) {  // only text tokens get here (the guard banned such bytes): start afresh
            need = 0;
            return;
        }
        if (need > 0) {
            --need;
            lo = 0x80, hi = 0xBF;
            return;
        }
        if (b < 0x80) return;
        need = b < 0xE0 ? 1 : b < 0xF0 ? 2 : 3;
        lo = b == 0xE0 ? 0xA0 : b == 0xF0 ? 0x90 : 0x80;
        hi = b == 0xED ? 0x9F : b == 0xF4 ? 0x8F : 0xBF;
    }

    static const char *name(const llama_sampler *) { return "sarai-utf8-guard"; }
    static void accept(llama_sampler *s, llama_token t) {
        auto *g = (Utf8Guard *)s->ctx;
        const int b = g->model->byte_of(t);
        if (b >= 0) {
            g->take((unsigned char)b);
        } else {
            for (unsigned char c : g->model->piece(t, true)) g->take(c);
        }
    }
    static void apply(llama_sampler *s, llama_token_data_array *cur) {
        const auto *g = (const Utf8Guard *)s->ctx;
        for (size_t i = 0; i < cur->size; ++i) {
            const int b = g->model->byte_of(cur->data[i].id);
            if (b >= 0 ? !g->fits((unsigned char)b) : g->need > 0) cur->data[i].logit = -INFINITY;
        }
    }
    static void reset(llama_sampler *s) { ((Utf8Guard *)s->ctx)->need = 0; }
    static llama_sampler *clone(const llama_sampler *s);
    static void free(llama_sampler *s) { delete (Utf8Guard *)s->ctx; }
};

// The llama_sampler_i of a sampler type with static name, accept, apply, reset,
// clone and free: no backend sampling, so those entries stay null.
template <typename T>
llama_sampler_i *iface_of() {
    static llama_sampler_i iface = [] {
        llama_sampler_i i{};
        i.name = T::name;
        i.accept = T::accept;
        i.apply = T::apply;
        i.reset = T::reset;
        i.clone = T::clone;
        i.free = T::free;
        return i;
    }();
    return &iface;
}

llama_sampler *Utf8Guard::clone(const llama_sampler *s) {
    return llama_sampler_init(iface_of<Utf8Guard>(), new Utf8Guard(*(const Utf8Guard *)s->ctx));
}

// A GBNF grammar as a sampler, on llama.cpp's grammar matcher (llama-grammar.cpp),
// which CMakeLists.txt compiles into this module rather than calling libllama's
// llama_sampler_init_grammar. The matcher reports a token or a prefill it rejects, and
// a trigger regex that does not compile, by throwing; thrown here, that exception
// meets this module's catches. In the manylinux wheels every shared library links its
// own copy of libc++ (tools/wheels.py), and an exception thrown in libllama's copy
// matches no `catch (const std::exception &)` in this module.
struct GrammarSampler {
    const llama_vocab *vocab;
    std::string text, root;
    bool lazy;
    std::vector<std::string> patterns;
    std::vector<llama_token> trigger_tokens;
    llama_grammar *grammar = nullptr;

    // A fresh matcher in its start state; null when the text does not parse
    // (check_grammar has given the reason before) or has no `root` rule.
    llama_grammar *start() const {
        std::vector<const char *> c_patterns;
        for (const auto &pat : patterns) c_patterns.push_back(pat.c_str());
        return llama_grammar_init_impl(vocab, text.c_str(), root.c_str(), lazy, c_patterns.data(), c_patterns.size(),
                                       trigger_tokens.data(), trigger_tokens.size());
    }

    static const char *name(const llama_sampler *) { return "sarai-grammar"; }
    static void accept(llama_sampler *s, llama_token t) {
        auto *g = (GrammarSampler *)s->ctx;
        // llama.cpp aborts the process on an end-of-generation token that no
        // alternative of the grammar allows yet; here it is a rejected token.
        if (!g->grammar->awaiting_trigger && llama_vocab_is_eog(g->vocab, t)) {
            const auto &stacks = g->grammar->stacks;
            if (std::none_of(stacks.begin(), stacks.end(), [](const auto &st) { return st.empty(); }))
                throw std::runtime_error("the grammar does not allow the end of generation here");
        }
        llama_grammar_accept_impl(*g->grammar, t);
    }
    static void apply(llama_sampler *s, llama_token_data_array *cur) {
        llama_grammar_apply_impl(*((GrammarSampler *)s->ctx)->grammar, cur);
    }
    static void reset(llama_sampler *s) {
        auto *g = (GrammarSampler *)s->ctx;
        if (llama_grammar *fresh = g->start()) {
            llama_grammar_free_impl(g->grammar);
            g->grammar = fresh;
        }
    }
    static llama_sampler *clone(const llama_sampler *s);
    static void free(llama_sampler *s) {
        auto *g = (GrammarSampler *)s->ctx;
        llama_grammar_free_impl(g->grammar);
        delete g;
    }
};

llama_sampler *GrammarSampler::clone(const llama_sampler *s) {
    const auto *g = (const GrammarSampler *)s->ctx;
    auto copy = std::make_unique<GrammarSampler>(*g);
    copy->grammar = llama_grammar_clone_impl(*g->grammar);
    return llama_sampler_init(iface_of<GrammarSampler>(), copy.release());
}

// The grammar sampler of `p`: plain, or lazy with its triggers, then advanced
// over the prefill text. A grammar that does not parse is refused by
// check_grammar with the parser's message; a trigger regex or prefill the
// grammar rejects throws from the matcher; all are the caller's input.
llama_sampler *make_grammar(const Model &model, const SamplerParams &p) {
    check_grammar(p.grammar, p.grammar_root, model.vocab());  // the parser's message; no stack overflow
    auto g = std::make_unique<GrammarSampler>(GrammarSampler{model.vocab(), p.grammar, p.grammar_root, p.grammar_lazy,
                                                             {}, {}});
    if (p.grammar_lazy) {
        g->patterns = p.grammar_trigger_patterns;
        for (int32_t t : p.grammar_trigger_tokens) model.check_token(t);
        g->trigger_tokens.assign(p.grammar_trigger_tokens.begin(), p.grammar_trigger_tokens.end());
    }
    clear_last_error();
    try {
        g->grammar = g->start();
    } catch (const std::exception &e) {
        throw InvalidArgument(std::string("invalid grammar trigger: ") + e.what());
    }
    if (!g->grammar) throw InvalidArgument(with_reason("invalid grammar"));
    llama_sampler *s = llama_sampler_init(iface_of<GrammarSampler>(), g.release());
    if (!p.grammar_lazy && !p.grammar_prefill.empty()) {
        try {
            // Tokens that read back as exactly the prefill text (Model::text_tokens).
            for (llama_token t : model.text_tokens(p.grammar_prefill)) llama_sampler_accept(s, t);
        } catch (const std::exception &e) {
            llama_sampler_free(s);
            throw InvalidArgument(std::string("the grammar rejects the generation prompt: ") + e.what());
        }
    }
    return s;
}

}  // namespace

Sampler::Sampler(const Model &model, const SamplerParams &p) {
    auto cparams = llama_sampler_chain_default_params();
    cparams.no_perf = false;
    chain_ = llama_sampler_chain_init(cparams);
    n_vocab_ = model.n_vocab();
    const llama_vocab *vocab = model.vocab();
    try {
        if (!p.logit_bias.empty()) {
            std::vector<llama_logit_bias> bias;
            for (const auto &b : p.logit_bias) {
                model.check_token(b.first);
                bias.push_back({b.first, b.second});
            }
            add(llama_sampler_init_logit_bias(model.n_vocab(), (int32_t)bias.size(), bias.data()));
        }
        if (p.repeat_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
            add(llama_sampler_init_penalties(model.n_vocab(), p.penalty_last_n, p.repeat_penalty, p.frequency_penalty,
                                             p.presence_penalty));
        }
        if (!p.grammar.empty()) {
            if (model.has_byte_tokens()) add(llama_sampler_init(iface_of<Utf8Guard>(), new Utf8Guard{&model}));
            add(make_grammar(model, p));
        }
    } catch (...) {
        // The destructor does not run for a throwing constructor: free the chain here.
        llama_sampler_free(chain_);
        chain_ = nullptr;
        throw;
    }
    greedy_only_ = p.temperature <= 0.0f && p.logit_bias.empty() && p.grammar.empty() && p.repeat_penalty == 1.0f &&
                   p.frequency_penalty == 0.0f && p.presence_penalty == 0.0f;
    if (p.temperature <= 0.0f) {
        add(llama_sampler_init_greedy());
    } else if (p.mirostat == 1) {
        add(llama_sampler_init_temp(p.temperature));
        add(llama_sampler_init_mirostat(model.n_vocab(), p.seed, p.mirostat_tau, p.mirostat_eta, 100));
    } else if (p.mirostat == 2) {
        add(llama_sampler_init_temp(p.temperature));
        add(llama_sampler_init_mirostat_v2(p.seed, p.mirostat_tau, p.mirostat_eta));
    } else {
        // llama.cpp's own order (common/sampling): truncate, then temperature, then draw.
        if (p.top_k > 0) {
            if (llama_sampler_chain_n(chain_) == 0 && p.top_k < model.n_vocab()) leading_top_k_ = p.top_k;
            add(llama_sampler_init_top_k(p.top_k));
        }
        if (p.typical_p < 1.0f) add(llama_sampler_init_typical(p.typical_p, 1));
        if (p.top_p < 1.0f) add(llama_sampler_init_top_p(p.top_p, 1));
        if (p.min_p > 0.0f) add(llama_sampler_init_min_p(p.min_p, 1));
        add(llama_sampler_init_temp(p.temperature));
        add(llama_sampler_init_dist(p.seed));
    }
}

Sampler::~Sampler() {
    if (chain_) llama_sampler_free(chain_);
}

llama_token Sampler::sample_from(const float *logits, int32_t n_vocab) {
    if (greedy_only_) {
        // A plain argmax: same token as the greedy chain, without building a
        // candidate array of n_vocab entries (3 MB per token for Gemma 3).
        return argmax(logits, n_vocab);
    }
    bool sorted = false;
    if (leading_top_k_ > 0 && leading_top_k_ < n_vocab) {
        // Same candidates, same order as the chain's own top-k would leave
        // (ties aside), without a 3 MB candidate array per token for Gemma 3:
        // at 8 sequences this was 8% of a decode step.
        top_k_candidates(logits, n_vocab, leading_top_k_, cur_);
        sorted = true;
    } else {
        cur_.resize((size_t)n_vocab);
        for (int32_t i = 0; i < n_vocab; ++i) cur_[i] = llama_token_data{i, logits[i], 0.0f};
    }
    llama_token_data_array arr{cur_.data(), cur_.size(), -1, sorted};
    llama_sampler_apply(chain_, &arr);
    if (arr.selected < 0 || (size_t)arr.selected >= arr.size) {
        throw std::runtime_error("sampler chain selected no token (a grammar that accepts nothing?)");
    }
    return arr.data[arr.selected].id;
}

}  // namespace sarai
