// sarai_llama._core: the thin pybind11 layer over llama.cpp's C API.
//
// Policy (defaults, dict shapes, thread counts, chat formats) lives in Python.
// What lives here is what must not cross the interpreter per token or must not
// hold the GIL: model loading, batched decoding, sampling, incremental UTF-8
// safe detokenisation. Every llama.cpp failure becomes a C++ exception that
// pybind11 turns into a Python one; nothing here may abort the process on bad
// input, so inputs are checked before they reach llama.cpp.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <filesystem>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#if defined(SARAI_BACKEND_DL)
#include <dlfcn.h>
#endif

#include "ggml-backend.h"
#include "gguf.h"
#include "llama.h"

namespace py = pybind11;

namespace {

// Raised when cancel() stopped a decode; Python sees sarai_llama._core.Cancelled.
class Cancelled : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// ------------------------------------------------------------------ logging
// llama.cpp logs from its own threads. We never call into Python from there:
// messages at or above the chosen level go to stderr, and the last error is
// kept so that a failed call can say why in its exception.
std::atomic<int> g_log_level{GGML_LOG_LEVEL_ERROR};
std::mutex g_last_error_mutex;
std::string g_last_error;

std::atomic<int> g_last_level{GGML_LOG_LEVEL_INFO};

void log_sink(ggml_log_level level, const char *text, void * /*user*/) {
    // CONT continues the previous message and inherits its level.
    if (level == GGML_LOG_LEVEL_CONT) level = static_cast<ggml_log_level>(g_last_level.load());
    else g_last_level.store(level);
    if (level == GGML_LOG_LEVEL_ERROR) {
        std::lock_guard<std::mutex> lock(g_last_error_mutex);
        g_last_error = text ? text : "";
        while (!g_last_error.empty() && (g_last_error.back() == '\n' || g_last_error.back() == ' ')) {
            g_last_error.pop_back();
        }
    }
    if (level >= g_log_level.load() && level != GGML_LOG_LEVEL_NONE && text) {
        fputs(text, stderr);
    }
}

std::string take_last_error() {
    std::lock_guard<std::mutex> lock(g_last_error_mutex);
    std::string out;
    out.swap(g_last_error);
    return out;
}

std::string with_reason(const std::string &what) {
    std::string reason = take_last_error();
    return reason.empty() ? what : what + ": " + reason;
}

void clear_last_error() { take_last_error(); }

// ------------------------------------------------------------------ backends
// The portable build ships ggml's CPU backend as several modules, one per ISA
// level, in <package>/lib. ggml only searches next to the executable and the
// current directory, so we choose and load one here before llama.cpp's own
// init (which loads nothing once a backend is registered). The choice is the
// one ggml's loader makes, the highest ggml_backend_score(), but we keep its
// name so the user can see which kernels run.
struct BackendChoice {
    std::string variant;  // e.g. "zen4"; "static" in native builds
    int score = 0;
    std::string reason;
};
BackendChoice g_backend;

#if defined(SARAI_BACKEND_DL)
int variant_score(const std::filesystem::path &path) {
    void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) return -1;
    using score_fn = int (*)();
    auto fn = reinterpret_cast<score_fn>(dlsym(handle, "ggml_backend_score"));
    const int score = fn ? fn() : -1;
    dlclose(handle);
    return score;
}

std::string variant_name(const std::filesystem::path &path) {
    std::string stem = path.filename().string();
    const std::string prefix = "libggml-cpu-", suffix = ".so";
    if (stem.rfind(prefix, 0) == 0) stem = stem.substr(prefix.size());
    if (stem.size() > suffix.size() && stem.compare(stem.size() - suffix.size(), suffix.size(), suffix) == 0)
        stem.resize(stem.size() - suffix.size());
    return stem;
}
#endif

py::dict init_backends(const std::string &libdir, const std::string &forced) {
    if (g_backend.variant.empty()) {
#if defined(SARAI_BACKEND_DL)
        namespace fs = std::filesystem;
        std::vector<fs::path> candidates;
        std::error_code ec;
        for (const auto &entry : fs::directory_iterator(libdir, ec)) {
            const std::string name = entry.path().filename().string();
            if (name.rfind("libggml-cpu-", 0) == 0 && name.size() > 3 && name.compare(name.size() - 3, 3, ".so") == 0)
                candidates.push_back(entry.path());
        }
        if (candidates.empty()) throw std::runtime_error("no CPU backend modules in " + libdir);
        fs::path chosen;
        int best = 0;
        std::string available;
        for (const auto &c : candidates) available += (available.empty() ? "" : ", ") + variant_name(c);
        if (!forced.empty()) {
            chosen = fs::path(libdir) / ("libggml-cpu-" + forced + ".so");
            if (!fs::exists(chosen))
                throw py::value_error("SARAI_CPU_VARIANT=" + forced + " is not shipped; available: " + available);
            best = variant_score(chosen);
            if (best <= 0)
                throw std::runtime_error("SARAI_CPU_VARIANT=" + forced + ": this CPU lacks the instructions it needs");
            g_backend.reason = "forced by SARAI_CPU_VARIANT";
        } else {
            for (const auto &c : candidates) {
                const int sc = variant_score(c);
                if (sc > best) {
                    best = sc;
                    chosen = c;
                }
            }
            if (chosen.empty()) throw std::runtime_error("no CPU backend module supports this CPU (" + available + ")");
            g_backend.reason = "highest score of " + std::to_string(candidates.size()) + " shipped variants";
        }
        clear_last_error();
        if (!ggml_backend_load(chosen.c_str()))
            throw std::runtime_error(with_reason("failed to load " + chosen.string()));
        g_backend.variant = variant_name(chosen);
        g_backend.score = best;
#else
        (void)libdir;
        if (!forced.empty())
            throw py::value_error("SARAI_CPU_VARIANT applies to the portable build; this is a native build");
        g_backend.variant = "static";
        g_backend.reason = "native build: one CPU backend compiled for this machine";
#endif
        llama_backend_init();
    }
    py::dict out;
    out["variant"] = g_backend.variant;
    out["score"] = g_backend.score;
    out["reason"] = g_backend.reason;
    return out;
}

// ------------------------------------------------------------------ GGUF
// Reads a GGUF header with ggml's own parser, without loading tensors, so that
// files which would make llama.cpp abort (a corrupt header, zero layers) are
// refused with a Python exception first.
py::dict inspect_gguf(const std::string &path) {
    gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
    gguf_context *ctx = nullptr;
    {
        py::gil_scoped_release release;
        clear_last_error();
        ctx = gguf_init_from_file(path.c_str(), params);
    }
    if (!ctx) {
        throw std::invalid_argument(with_reason("not a readable GGUF file: " + path));
    }
    std::unique_ptr<gguf_context, decltype(&gguf_free)> guard(ctx, gguf_free);
    py::dict meta;
    const int64_t n = gguf_get_n_kv(ctx);
    for (int64_t i = 0; i < n; ++i) {
        const char *key = gguf_get_key(ctx, i);
        switch (gguf_get_kv_type(ctx, i)) {
            case GGUF_TYPE_STRING: meta[key] = py::bytes(gguf_get_val_str(ctx, i)); break;
            case GGUF_TYPE_UINT8: meta[key] = gguf_get_val_u8(ctx, i); break;
            case GGUF_TYPE_INT8: meta[key] = gguf_get_val_i8(ctx, i); break;
            case GGUF_TYPE_UINT16: meta[key] = gguf_get_val_u16(ctx, i); break;
            case GGUF_TYPE_INT16: meta[key] = gguf_get_val_i16(ctx, i); break;
            case GGUF_TYPE_UINT32: meta[key] = gguf_get_val_u32(ctx, i); break;
            case GGUF_TYPE_INT32: meta[key] = gguf_get_val_i32(ctx, i); break;
            case GGUF_TYPE_UINT64: meta[key] = gguf_get_val_u64(ctx, i); break;
            case GGUF_TYPE_INT64: meta[key] = gguf_get_val_i64(ctx, i); break;
            case GGUF_TYPE_FLOAT32: meta[key] = gguf_get_val_f32(ctx, i); break;
            case GGUF_TYPE_FLOAT64: meta[key] = gguf_get_val_f64(ctx, i); break;
            case GGUF_TYPE_BOOL: meta[key] = gguf_get_val_bool(ctx, i); break;
            case GGUF_TYPE_ARRAY: meta[key] = py::none(); break;  // arrays (vocab) are not needed here
            default: break;
        }
    }
    meta["__n_tensors__"] = gguf_get_n_tensors(ctx);

    return meta;
}

// Refuses, with std::invalid_argument (Python: ValueError), the GGUF files on
// which llama.cpp would abort the process instead of failing: unreadable or
// corrupt headers, no architecture, zero layers, no tensors, duplicate
// vocabulary entries. Every model load goes through here, whichever Python
// path asked for it.
void validate_gguf(const std::string &path, bool vocab_only) {
    gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
    clear_last_error();
    gguf_context *ctx = gguf_init_from_file(path.c_str(), params);
    if (!ctx) throw std::invalid_argument(with_reason("not a readable GGUF file: " + path));
    std::unique_ptr<gguf_context, decltype(&gguf_free)> guard(ctx, gguf_free);
    const int64_t arch_key = gguf_find_key(ctx, "general.architecture");
    if (arch_key < 0 || gguf_get_kv_type(ctx, arch_key) != GGUF_TYPE_STRING)
        throw std::invalid_argument(path + ": GGUF has no general.architecture");
    const std::string arch = gguf_get_val_str(ctx, arch_key);
    if (!vocab_only) {
        const int64_t blocks_key = gguf_find_key(ctx, (arch + ".block_count").c_str());
        int64_t blocks = -1;
        if (blocks_key >= 0) {
            switch (gguf_get_kv_type(ctx, blocks_key)) {
                case GGUF_TYPE_UINT32: blocks = gguf_get_val_u32(ctx, blocks_key); break;
                case GGUF_TYPE_INT32: blocks = gguf_get_val_i32(ctx, blocks_key); break;
                case GGUF_TYPE_UINT64: blocks = (int64_t)gguf_get_val_u64(ctx, blocks_key); break;
                default: break;
            }
        }
        if (blocks <= 0)
            throw std::invalid_argument(path + ": GGUF says " + arch + ".block_count=" +
                                        (blocks_key < 0 ? std::string("(missing)") : std::to_string(blocks)) +
                                        "; a model needs at least one layer");
        if (gguf_get_n_tensors(ctx) <= 0) throw std::invalid_argument(path + ": GGUF has no tensors");
    }
    const int64_t tok_key = gguf_find_key(ctx, "tokenizer.ggml.tokens");
    if (tok_key >= 0 && gguf_get_kv_type(ctx, tok_key) == GGUF_TYPE_ARRAY &&
        gguf_get_arr_type(ctx, tok_key) == GGUF_TYPE_STRING) {
        const size_t n_tok = gguf_get_arr_n(ctx, tok_key);
        std::unordered_set<std::string_view> seen;
        seen.reserve(n_tok);
        for (size_t j = 0; j < n_tok; ++j) {
            if (!seen.insert(gguf_get_arr_str(ctx, tok_key, j)).second)
                throw std::invalid_argument(path + ": the vocabulary has a duplicate token " +
                                            std::string(gguf_get_arr_str(ctx, tok_key, j)));
        }
    }
}

// ------------------------------------------------------------------ UTF-8
// Number of bytes at the end of `s` that form an incomplete UTF-8 sequence.
size_t incomplete_utf8_tail(const std::string &s) {
    const size_t n = s.size();
    for (size_t back = 1; back <= 4 && back <= n; ++back) {
        const unsigned char c = static_cast<unsigned char>(s[n - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
        size_t need = 1;
        if ((c & 0xE0) == 0xC0) need = 2;
        else if ((c & 0xF0) == 0xE0) need = 3;
        else if ((c & 0xF8) == 0xF0) need = 4;
        return need > back ? back : 0;
    }
    return 0;
}

// ------------------------------------------------------------------ Model
class Model {
  public:
    Model(const std::string &path, bool vocab_only, bool use_mmap, bool use_mlock, bool use_extra_bufts,
          bool check_tensors) {
        auto params = llama_model_default_params();
        params.n_gpu_layers = 0;
        params.vocab_only = vocab_only;
        params.check_tensors = check_tensors;
        params.use_extra_bufts = use_extra_bufts;
        if (use_mmap && use_mlock) params.load_mode = LLAMA_LOAD_MODE_MMAP_MLOCK;
        else if (use_mmap) params.load_mode = LLAMA_LOAD_MODE_MMAP;
        else if (use_mlock) params.load_mode = LLAMA_LOAD_MODE_MLOCK;
        else params.load_mode = LLAMA_LOAD_MODE_NONE;
        {
            py::gil_scoped_release release;
            validate_gguf(path, vocab_only);
            clear_last_error();
            model_ = llama_model_load_from_file(path.c_str(), params);
        }
        if (!model_) throw std::runtime_error(with_reason("failed to load model from " + path));
        vocab_ = llama_model_get_vocab(model_);
        n_vocab_ = llama_vocab_n_tokens(vocab_);
    }
    ~Model() {
        if (model_) llama_model_free(model_);
    }
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;

    llama_model *get() const { return model_; }
    const llama_vocab *vocab() const { return vocab_; }
    int32_t n_vocab() const { return n_vocab_; }

    void check_token(llama_token t) const {
        if (t < 0 || t >= n_vocab_) {
            throw py::value_error("token id " + std::to_string(t) + " is out of range [0, " +
                                  std::to_string(n_vocab_) + ")");
        }
    }

    std::vector<llama_token> tokenize(const std::string &text, bool add_special, bool parse_special) const {
        std::vector<llama_token> out(text.size() + 2);
        int32_t n;
        {
            py::gil_scoped_release release;
            n = llama_tokenize(vocab_, text.data(), (int32_t)text.size(), out.data(), (int32_t)out.size(),
                               add_special, parse_special);
            if (n < 0) {
                out.resize((size_t)-n);
                n = llama_tokenize(vocab_, text.data(), (int32_t)text.size(), out.data(), (int32_t)out.size(),
                                   add_special, parse_special);
            }
        }
        if (n < 0) throw std::runtime_error("tokenization failed");
        out.resize((size_t)n);
        return out;
    }

    std::string piece(llama_token t, bool special) const {
        check_token(t);
        char buf[256];
        int32_t n = llama_token_to_piece(vocab_, t, buf, sizeof(buf), 0, special);
        if (n >= 0) return std::string(buf, (size_t)n);
        std::string big((size_t)-n, '\0');
        n = llama_token_to_piece(vocab_, t, big.data(), (int32_t)big.size(), 0, special);
        big.resize(n > 0 ? (size_t)n : 0);
        return big;
    }

    std::string detokenize(const std::vector<llama_token> &tokens, bool special) const {
        std::string out;
        for (auto t : tokens) out += piece(t, special);
        return out;
    }

    py::dict metadata() const {
        py::dict meta;
        const int32_t n = llama_model_meta_count(model_);
        std::vector<char> key(512), val(4096);
        for (int32_t i = 0; i < n; ++i) {
            int32_t kl = llama_model_meta_key_by_index(model_, i, key.data(), key.size());
            if (kl < 0) continue;
            if ((size_t)kl >= key.size()) {
                key.resize(kl + 1);
                llama_model_meta_key_by_index(model_, i, key.data(), key.size());
            }
            int32_t vl = llama_model_meta_val_str_by_index(model_, i, val.data(), val.size());
            if (vl < 0) continue;
            if ((size_t)vl >= val.size()) {
                val.resize(vl + 1);
                llama_model_meta_val_str_by_index(model_, i, val.data(), val.size());
            }
            meta[py::str(key.data())] = py::str(std::string(val.data()));
        }
        return meta;
    }

    std::string desc() const {
        char buf[256];
        llama_model_desc(model_, buf, sizeof(buf));
        return buf;
    }

    std::optional<std::string> chat_template(const std::optional<std::string> &name) const {
        const char *t = llama_model_chat_template(model_, name ? name->c_str() : nullptr);
        if (!t) return std::nullopt;
        return std::string(t);
    }

  private:
    llama_model *model_ = nullptr;
    const llama_vocab *vocab_ = nullptr;
    int32_t n_vocab_ = 0;
};

// Renders messages with llama.cpp's built-in template matcher: it recognises
// known template families and formats them in C++, so a template string can
// never execute code (unlike a Jinja template run unsandboxed).
std::string apply_chat_template(const std::string &tmpl, const std::vector<std::pair<std::string, std::string>> &messages,
                                bool add_assistant) {
    std::vector<llama_chat_message> msgs;
    msgs.reserve(messages.size());
    for (const auto &m : messages) msgs.push_back({m.first.c_str(), m.second.c_str()});
    size_t total = 0;
    for (const auto &m : messages) total += m.first.size() + m.second.size();
    std::vector<char> buf(total * 2 + 256);
    int32_t n = llama_chat_apply_template(tmpl.c_str(), msgs.data(), msgs.size(), add_assistant, buf.data(),
                                          (int32_t)buf.size());
    if (n < 0) throw py::value_error("chat template is not supported by llama.cpp's renderer");
    if ((size_t)n > buf.size()) {
        buf.resize((size_t)n);
        n = llama_chat_apply_template(tmpl.c_str(), msgs.data(), msgs.size(), add_assistant, buf.data(),
                                      (int32_t)buf.size());
    }
    return std::string(buf.data(), (size_t)n);
}

std::vector<std::string> builtin_chat_templates() {
    int32_t n = llama_chat_builtin_templates(nullptr, 0);
    std::vector<const char *> names((size_t)n);
    llama_chat_builtin_templates(names.data(), names.size());
    return std::vector<std::string>(names.begin(), names.end());
}

// ------------------------------------------------------------------ Sampler
// First index of the largest logit (the greedy sampler's choice). Blocks of 16
// reduce with a branch-free max the compiler vectorises; only a block that
// beats the best so far is searched for its index.
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
    std::vector<std::pair<int32_t, float>> logit_bias;
    int32_t mirostat = 0;
    float mirostat_tau = 5.0f;
    float mirostat_eta = 0.1f;
};

class Sampler {
  public:
    Sampler(const Model &model, const SamplerParams &p) {
        auto cparams = llama_sampler_chain_default_params();
        cparams.no_perf = false;
        chain_ = llama_sampler_chain_init(cparams);
        const llama_vocab *vocab = model.vocab();
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
            clear_last_error();
            llama_sampler *g = llama_sampler_init_grammar(vocab, p.grammar.c_str(), p.grammar_root.c_str());
            if (!g) {
                llama_sampler_free(chain_);
                chain_ = nullptr;
                throw py::value_error(with_reason("invalid grammar"));
            }
            add(g);
        }
        greedy_only_ = p.temperature <= 0.0f && p.logit_bias.empty() && p.grammar.empty() &&
                       p.repeat_penalty == 1.0f && p.frequency_penalty == 0.0f && p.presence_penalty == 0.0f;
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
            if (p.top_k > 0) add(llama_sampler_init_top_k(p.top_k));
            if (p.typical_p < 1.0f) add(llama_sampler_init_typical(p.typical_p, 1));
            if (p.top_p < 1.0f) add(llama_sampler_init_top_p(p.top_p, 1));
            if (p.min_p > 0.0f) add(llama_sampler_init_min_p(p.min_p, 1));
            add(llama_sampler_init_temp(p.temperature));
            add(llama_sampler_init_dist(p.seed));
        }
    }
    ~Sampler() {
        if (chain_) llama_sampler_free(chain_);
    }
    Sampler(const Sampler &) = delete;
    Sampler &operator=(const Sampler &) = delete;

    llama_sampler *get() const { return chain_; }
    void accept(llama_token t) { llama_sampler_accept(chain_, t); }
    void reset() { llama_sampler_reset(chain_); }

    // Applies the chain to `logits` (n_vocab floats) and returns the chosen token.
    llama_token sample_from(const float *logits, int32_t n_vocab) {
        if (greedy_only_) {
            // A plain argmax: same token as the greedy chain, without building a
            // candidate array of n_vocab entries (3 MB per token for Gemma 3).
            return argmax(logits, n_vocab);
        }
        cur_.resize((size_t)n_vocab);
        for (int32_t i = 0; i < n_vocab; ++i) cur_[i] = llama_token_data{i, logits[i], 0.0f};
        llama_token_data_array arr{cur_.data(), cur_.size(), -1, false};
        llama_sampler_apply(chain_, &arr);
        if (arr.selected < 0 || (size_t)arr.selected >= arr.size) {
            throw std::runtime_error("sampler chain selected no token (a grammar that accepts nothing?)");
        }
        return arr.data[arr.selected].id;
    }

  private:
    void add(llama_sampler *s) { llama_sampler_chain_add(chain_, s); }
    llama_sampler *chain_ = nullptr;
    bool greedy_only_ = false;
    std::vector<llama_token_data> cur_;
};

// ------------------------------------------------------------------ Context
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

class Context {
  public:
    Context(std::shared_ptr<Model> model, const ContextParams &p) : model_(std::move(model)) {
        auto params = llama_context_default_params();
        params.n_ctx = p.n_ctx;
        params.n_batch = p.n_batch;
        params.n_ubatch = p.n_ubatch;
        params.n_seq_max = 1;
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
        params.abort_callback = &Context::abort_cb;
        params.abort_callback_data = this;
        {
            py::gil_scoped_release release;
            clear_last_error();
            ctx_ = llama_init_from_model(model_->get(), params);
        }
        if (!ctx_) throw std::runtime_error(with_reason("failed to create the llama.cpp context"));
        n_ctx_ = llama_n_ctx(ctx_);
        n_batch_ = llama_n_batch(ctx_);
    }
    ~Context() {
        if (ctx_) llama_free(ctx_);
    }
    Context(const Context &) = delete;
    Context &operator=(const Context &) = delete;

    uint32_t n_ctx() const { return n_ctx_; }
    uint32_t n_batch() const { return n_batch_; }
    const std::vector<llama_token> &tokens() const { return tokens_; }

    // cancel() may come from any thread; the flag stays set until the next
    // call starts (reset_cancel), so a cancel between two decodes is not lost.
    void cancel() { abort_.store(true); }
    void reset_cancel() { abort_.store(false); }
    bool cancelled() const { return abort_.load(); }

    void set_threads(int32_t n_threads, int32_t n_threads_batch) {
        if (n_threads < 1 || n_threads_batch < 1) throw py::value_error("thread counts must be >= 1");
        llama_set_n_threads(ctx_, n_threads, n_threads_batch);
    }

    // Drops everything after the first `keep` tokens from the KV cache. Returns
    // false when the memory cannot cut there (e.g. sliding-window caches): the
    // caller then clears and re-evaluates.
    bool truncate(size_t keep) {
        if (keep >= tokens_.size()) return true;
        if (!llama_memory_seq_rm(llama_get_memory(ctx_), 0, (llama_pos)keep, -1)) {
            clear();
            return false;
        }
        tokens_.resize(keep);
        return true;
    }

    void clear() {
        llama_memory_clear(llama_get_memory(ctx_), true);
        tokens_.clear();
    }

    // Evaluates `tokens` after the cached ones, n_batch at a time, with the GIL
    // released. Logits are kept for the last token only (or for all of them when
    // `all_logits`, for logprobs and echo).
    void eval(const std::vector<llama_token> &tokens, bool all_logits) {
        for (auto t : tokens) model_->check_token(t);
        if (tokens_.size() + tokens.size() > n_ctx_) {
            throw py::value_error("cannot evaluate " + std::to_string(tokens.size()) + " tokens after " +
                                  std::to_string(tokens_.size()) + ": the context holds " +
                                  std::to_string(n_ctx_) + " tokens");
        }
        size_t done = 0;
        while (done < tokens.size()) {
            const size_t n = std::min<size_t>(n_batch_, tokens.size() - done);
            llama_batch batch = llama_batch_init((int32_t)n, 0, 1);
            for (size_t i = 0; i < n; ++i) {
                batch.token[i] = tokens[done + i];
                batch.pos[i] = (llama_pos)(tokens_.size() + i);
                batch.n_seq_id[i] = 1;
                batch.seq_id[i][0] = 0;
                batch.logits[i] = all_logits || (done + i + 1 == tokens.size());
            }
            batch.n_tokens = (int32_t)n;
            int32_t rc;
            {
                py::gil_scoped_release release;
                clear_last_error();
                rc = llama_decode(ctx_, batch);
            }
            llama_batch_free(batch);
            if (rc != 0) {
                // A failed or aborted decode may leave partial state behind.
                llama_memory_seq_rm(llama_get_memory(ctx_), 0, (llama_pos)tokens_.size(), -1);
                if (rc == 2) {
                    // Aborted: by a Ctrl-C that arrived meanwhile, or by cancel().
                    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                    throw Cancelled("generation cancelled");
                }
                if (rc == 1) throw std::runtime_error("no room in the KV cache for the batch (context full)");
                throw std::runtime_error(with_reason("llama_decode failed with code " + std::to_string(rc)));
            }
            tokens_.insert(tokens_.end(), tokens.begin() + (long)done, tokens.begin() + (long)(done + n));
            done += n;
            // Between batches: honour Ctrl-C during a long prompt.
            if (PyErr_CheckSignals() != 0) {
                throw py::error_already_set();
            }
        }
    }

    // Logits of the i-th output row of the last batch (default: the last one).
    py::array_t<float> logits(int32_t i) const {
        const float *row = llama_get_logits_ith(ctx_, i);
        if (!row) throw std::runtime_error("no logits available (evaluate a prompt first)");
        py::array_t<float> out(model_->n_vocab());
        std::memcpy(out.mutable_data(), row, sizeof(float) * (size_t)model_->n_vocab());
        return out;
    }

    py::array_t<float> embeddings() const {
        const int32_t n_embd = llama_model_n_embd_out(model_->get());
        const float *e = llama_get_embeddings_seq(ctx_, 0);
        if (!e) e = llama_get_embeddings_ith(ctx_, -1);
        if (!e) throw std::runtime_error("no embeddings available (was the context created with embedding=True?)");
        py::array_t<float> out(n_embd);
        std::memcpy(out.mutable_data(), e, sizeof(float) * (size_t)n_embd);
        return out;
    }

    // One generation step: choose a token from the last logits (or from
    // `logits` when Python logits processors rewrote them), accept it, and
    // return it with the text it completes. The token is not evaluated yet,
    // so a caller that stops on it wastes no decode.
    py::tuple sample(Sampler &sampler, std::optional<py::array_t<float, py::array::c_style | py::array::forcecast>> logits) {
        llama_token tok;
        if (logits) {
            if (logits->size() != model_->n_vocab()) throw py::value_error("logits must have n_vocab entries");
            tok = sampler.sample_from(logits->data(), model_->n_vocab());
        } else {
            const float *row = llama_get_logits_ith(ctx_, -1);
            if (!row) throw std::runtime_error("no logits available (evaluate a prompt first)");
            tok = sampler.sample_from(row, model_->n_vocab());
        }
        sampler.accept(tok);
        const bool eog = llama_vocab_is_eog(model_->vocab(), tok);
        return py::make_tuple(tok, eog);
    }

    // Appends a token's text to the pending bytes and returns the longest
    // prefix that is complete UTF-8; the rest waits for the next token.
    py::bytes push_text(llama_token tok) {
        pending_ += model_->piece(tok, false);
        const size_t hold = incomplete_utf8_tail(pending_);
        std::string ready = pending_.substr(0, pending_.size() - hold);
        pending_.erase(0, pending_.size() - hold);
        return py::bytes(ready);
    }
    py::bytes flush_text() {
        std::string rest;
        rest.swap(pending_);
        return py::bytes(rest);
    }

    py::bytes state() const {
        const size_t n = llama_state_get_size(ctx_);
        std::string buf(n, '\0');
        const size_t got = llama_state_get_data(ctx_, reinterpret_cast<uint8_t *>(buf.data()), n);
        buf.resize(got);
        return py::bytes(buf);
    }
    void set_state(const std::string &data, const std::vector<llama_token> &tokens) {
        clear();
        const size_t used = llama_state_set_data(ctx_, reinterpret_cast<const uint8_t *>(data.data()), data.size());
        if (used == 0) throw py::value_error("state does not fit this model and context");
        tokens_ = tokens;
    }

    py::dict perf() const {
        const auto d = llama_perf_context(ctx_);
        py::dict out;
        out["t_load_ms"] = d.t_load_ms;
        out["t_p_eval_ms"] = d.t_p_eval_ms;
        out["t_eval_ms"] = d.t_eval_ms;
        out["n_p_eval"] = d.n_p_eval;
        out["n_eval"] = d.n_eval;
        out["n_reused"] = d.n_reused;
        return out;
    }
    void perf_reset() { llama_perf_context_reset(ctx_); }

  private:
    static bool abort_cb(void *data) { return static_cast<Context *>(data)->abort_.load(std::memory_order_relaxed); }

    std::shared_ptr<Model> model_;
    llama_context *ctx_ = nullptr;
    uint32_t n_ctx_ = 0;
    uint32_t n_batch_ = 0;
    std::vector<llama_token> tokens_;
    std::string pending_;
    std::atomic<bool> abort_{false};
};

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "Thin binding of llama.cpp (see sarai_llama for the Python API)";

    llama_log_set(log_sink, nullptr);
    ggml_log_set(log_sink, nullptr);

    static py::exception<Cancelled> cancelled_exc(m, "Cancelled", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const Cancelled &e) {
            py::set_error(cancelled_exc, e.what());
        }
    });

    m.attr("LLAMA_COMMIT") = SARAI_LLAMA_COMMIT;
    m.def("init_backends", &init_backends, py::arg("libdir"), py::arg("forced_variant") = "",
          "Load the CPU backend (the best shipped variant, or the forced one) and initialise llama.cpp; idempotent");
    m.def("llama_version", []() { return std::string(llama_version()); });
    m.def("system_info", []() { return std::string(llama_print_system_info()); },
          "llama.cpp's own report of the CPU features its kernels use");
    m.def("backends", []() {
        std::vector<std::string> out;
        for (size_t i = 0; i < ggml_backend_reg_count(); ++i) out.emplace_back(ggml_backend_reg_name(ggml_backend_reg_get(i)));
        return out;
    });
    m.def("set_log_level", [](int level) { g_log_level.store(level); },
          "Minimum ggml log level printed to stderr (1 debug .. 4 error, 5 silent)");
    m.def("inspect_gguf", &inspect_gguf, py::arg("path"));
    m.def("apply_chat_template", &apply_chat_template, py::arg("template"), py::arg("messages"),
          py::arg("add_assistant") = true);
    m.def("builtin_chat_templates", &builtin_chat_templates);
    m.def("supports_mmap", &llama_supports_mmap);
    m.def("supports_mlock", &llama_supports_mlock);

    py::class_<Model, std::shared_ptr<Model>>(m, "Model")
        .def(py::init<const std::string &, bool, bool, bool, bool, bool>(), py::arg("path"),
             py::arg("vocab_only") = false, py::arg("use_mmap") = true, py::arg("use_mlock") = false,
             py::arg("use_extra_bufts") = true, py::arg("check_tensors") = false)
        .def_property_readonly("n_vocab", &Model::n_vocab)
        .def_property_readonly("n_embd", [](const Model &s) { return llama_model_n_embd_out(s.get()); })
        .def_property_readonly("n_ctx_train", [](const Model &s) { return llama_model_n_ctx_train(s.get()); })
        .def_property_readonly("n_layer", [](const Model &s) { return llama_model_n_layer(s.get()); })
        .def_property_readonly("n_params", [](const Model &s) { return llama_model_n_params(s.get()); })
        .def_property_readonly("size", [](const Model &s) { return llama_model_size(s.get()); })
        .def_property_readonly("desc", &Model::desc)
        .def_property_readonly("has_encoder", [](const Model &s) { return llama_model_has_encoder(s.get()); })
        .def_property_readonly("token_bos", [](const Model &s) { return llama_vocab_bos(s.vocab()); })
        .def_property_readonly("token_eos", [](const Model &s) { return llama_vocab_eos(s.vocab()); })
        .def_property_readonly("token_eot", [](const Model &s) { return llama_vocab_eot(s.vocab()); })
        .def_property_readonly("token_nl", [](const Model &s) { return llama_vocab_nl(s.vocab()); })
        .def_property_readonly("add_bos", [](const Model &s) { return llama_vocab_get_add_bos(s.vocab()); })
        .def("is_eog", [](const Model &s, llama_token t) { return llama_vocab_is_eog(s.vocab(), t); })
        .def("tokenize",
             [](const Model &s, py::bytes text, bool add_special, bool parse_special) {
                 return s.tokenize(std::string(text), add_special, parse_special);
             },
             py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = false)
        .def("token_to_piece", [](const Model &s, llama_token t, bool special) { return py::bytes(s.piece(t, special)); },
             py::arg("token"), py::arg("special") = false)
        .def("detokenize",
             [](const Model &s, const std::vector<llama_token> &tokens, bool special) {
                 return py::bytes(s.detokenize(tokens, special));
             },
             py::arg("tokens"), py::arg("special") = false)
        .def("metadata", &Model::metadata)
        .def("chat_template", &Model::chat_template, py::arg("name") = py::none());

    py::class_<SamplerParams>(m, "SamplerParams")
        .def(py::init<>())
        .def_readwrite("temperature", &SamplerParams::temperature)
        .def_readwrite("top_k", &SamplerParams::top_k)
        .def_readwrite("top_p", &SamplerParams::top_p)
        .def_readwrite("min_p", &SamplerParams::min_p)
        .def_readwrite("typical_p", &SamplerParams::typical_p)
        .def_readwrite("repeat_penalty", &SamplerParams::repeat_penalty)
        .def_readwrite("frequency_penalty", &SamplerParams::frequency_penalty)
        .def_readwrite("presence_penalty", &SamplerParams::presence_penalty)
        .def_readwrite("penalty_last_n", &SamplerParams::penalty_last_n)
        .def_readwrite("seed", &SamplerParams::seed)
        .def_readwrite("grammar", &SamplerParams::grammar)
        .def_readwrite("grammar_root", &SamplerParams::grammar_root)
        .def_readwrite("logit_bias", &SamplerParams::logit_bias)
        .def_readwrite("mirostat", &SamplerParams::mirostat)
        .def_readwrite("mirostat_tau", &SamplerParams::mirostat_tau)
        .def_readwrite("mirostat_eta", &SamplerParams::mirostat_eta);

    py::class_<Sampler>(m, "Sampler")
        // The grammar and penalty samplers keep pointers into the model's vocabulary.
        .def(py::init<const Model &, const SamplerParams &>(), py::arg("model"), py::arg("params"),
             py::keep_alive<1, 2>())
        .def("accept", &Sampler::accept)
        .def("reset", &Sampler::reset);

    py::class_<ContextParams>(m, "ContextParams")
        .def(py::init<>())
        .def_readwrite("n_ctx", &ContextParams::n_ctx)
        .def_readwrite("n_batch", &ContextParams::n_batch)
        .def_readwrite("n_ubatch", &ContextParams::n_ubatch)
        .def_readwrite("n_threads", &ContextParams::n_threads)
        .def_readwrite("n_threads_batch", &ContextParams::n_threads_batch)
        .def_readwrite("type_k", &ContextParams::type_k)
        .def_readwrite("type_v", &ContextParams::type_v)
        .def_readwrite("flash_attn", &ContextParams::flash_attn)
        .def_readwrite("embeddings", &ContextParams::embeddings)
        .def_readwrite("pooling_type", &ContextParams::pooling_type)
        .def_readwrite("swa_full", &ContextParams::swa_full);

    py::class_<Context>(m, "Context")
        .def(py::init<std::shared_ptr<Model>, const ContextParams &>(), py::arg("model"), py::arg("params"))
        .def_property_readonly("n_ctx", &Context::n_ctx)
        .def_property_readonly("n_batch", &Context::n_batch)
        .def_property_readonly("tokens", &Context::tokens)
        .def("cancel", &Context::cancel)
        .def("reset_cancel", &Context::reset_cancel)
        .def_property_readonly("cancelled", &Context::cancelled)
        .def("set_threads", &Context::set_threads)
        .def("truncate", &Context::truncate, py::arg("keep"))
        .def("clear", &Context::clear)
        .def("eval", &Context::eval, py::arg("tokens"), py::arg("all_logits") = false)
        .def("logits", &Context::logits, py::arg("i") = -1)
        .def("embeddings", &Context::embeddings)
        .def("sample", &Context::sample, py::arg("sampler"), py::arg("logits") = py::none())
        .def("push_text", &Context::push_text)
        .def("flush_text", &Context::flush_text)
        .def("state", &Context::state)
        .def("set_state", [](Context &c, py::bytes data, const std::vector<llama_token> &tokens) {
                 c.set_state(std::string(data), tokens);
             })
        .def("perf", &Context::perf)
        .def("perf_reset", &Context::perf_reset);
}
