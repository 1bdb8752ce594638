#include "model.h"

#include <cctype>

#include "errors.h"
#include "gguf_check.h"
#include "log.h"

namespace sarai {

Model::Model(const std::string &path, const ModelParams &p) : path_(path) {
    auto params = llama_model_default_params();
    params.n_gpu_layers = 0;
    params.vocab_only = p.vocab_only;
    params.check_tensors = p.check_tensors;
    params.use_extra_bufts = p.use_extra_bufts;
    if (p.use_mmap && p.use_mlock) params.load_mode = LLAMA_LOAD_MODE_MMAP_MLOCK;
    else if (p.use_mmap) params.load_mode = LLAMA_LOAD_MODE_MMAP;
    else if (p.use_mlock) params.load_mode = LLAMA_LOAD_MODE_MLOCK;
    else params.load_mode = LLAMA_LOAD_MODE_NONE;
    validate_gguf(path, p.vocab_only);
    clear_last_error();
    model_ = llama_model_load_from_file(path.c_str(), params);
    if (!model_) throw std::runtime_error(with_reason("failed to load model from " + path));
    vocab_ = llama_model_get_vocab(model_);
    n_vocab_ = llama_vocab_n_tokens(vocab_);
}

Model::~Model() {
    if (model_) llama_model_free(model_);
}

void Model::check_token(llama_token t) const {
    if (t < 0 || t >= n_vocab_) {
        throw InvalidArgument("token id " + std::to_string(t) + " is out of range [0, " + std::to_string(n_vocab_) +
                              ")");
    }
}

std::vector<llama_token> Model::tokenize(const std::string &text, bool add_special, bool parse_special) const {
    std::vector<llama_token> out(text.size() + 2);
    // llama_tokenize throws (std::out_of_range) when the vocabulary lacks a token its
    // tokenizer looks up, such as a byte-fallback token. In the manylinux wheels that
    // exception comes from libllama's own libc++ and matches no std::exception here
    // (sampler.cpp, GrammarSampler), so catch (...) gives the message.
    auto call = [&] {
        try {
            return llama_tokenize(vocab_, text.data(), (int32_t)text.size(), out.data(), (int32_t)out.size(),
                                  add_special, parse_special);
        } catch (...) {
            throw InvalidArgument("the model's tokenizer cannot encode this text: its vocabulary lacks a token "
                                  "the tokenizer looks up (a byte-fallback token?)");
        }
    };
    int32_t n = call();
    if (n < 0) {
        out.resize((size_t)-n);
        n = call();
    }
    if (n < 0) throw std::runtime_error("tokenization failed");
    out.resize((size_t)n);
    return out;
}

std::string Model::piece(llama_token t, bool special) const {
    check_token(t);
    char buf[256];
    int32_t n = llama_token_to_piece(vocab_, t, buf, sizeof(buf), 0, special);
    if (n >= 0) return std::string(buf, (size_t)n);
    std::string big((size_t)-n, '\0');
    n = llama_token_to_piece(vocab_, t, big.data(), (int32_t)big.size(), 0, special);
    big.resize(n > 0 ? (size_t)n : 0);
    return big;
}

const Model::ByteTables &Model::byte_tables() const {
    std::call_once(byte_tables_once_, [this] {
        ByteTables &b = byte_tables_;
        b.byte_token.fill(-1);
        b.token_byte.assign((size_t)n_vocab_, -1);
        for (llama_token t = 0; t < n_vocab_; ++t) {
            if (!(llama_vocab_get_attr(vocab_, t) & LLAMA_TOKEN_ATTR_BYTE)) continue;
            std::string p = piece(t, true);
            if (p.size() != 1) continue;
            const unsigned char c = (unsigned char)p[0];
            b.token_byte[(size_t)t] = c;
            if (b.byte_token[c] < 0) b.byte_token[c] = t;
            b.any = true;
        }
    });
    return byte_tables_;
}

std::vector<llama_token> Model::text_tokens(const std::string &text) const {
    std::vector<llama_token> toks = tokenize(text, false, true);
    if (!toks.empty() && !text.empty() && !std::isspace((unsigned char)text[0])) {
        std::string first = piece(toks[0], true);
        if (!first.empty() && std::isspace((unsigned char)first[0])) toks.erase(toks.begin());
    }
    std::string joined;
    for (llama_token t : toks) joined += piece(t, true);
    if (joined == text) return toks;
    const auto &bytes = byte_tables().byte_token;
    std::vector<llama_token> out;
    for (unsigned char c : text) {
        if (bytes[c] < 0) return toks;
        out.push_back(bytes[c]);
    }
    return out;
}

std::string Model::detokenize(const std::vector<llama_token> &tokens, bool special) const {
    std::string out;
    for (auto t : tokens) out += piece(t, special);
    return out;
}

std::vector<std::pair<std::string, std::string>> Model::metadata() const {
    std::vector<std::pair<std::string, std::string>> meta;
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
        meta.emplace_back(std::string(key.data()), std::string(val.data()));
    }
    return meta;
}

std::string Model::desc() const {
    char buf[256];
    llama_model_desc(model_, buf, sizeof(buf));
    return buf;
}

std::optional<std::string> Model::chat_template(const std::optional<std::string> &name) const {
    const char *t = llama_model_chat_template(model_, name ? name->c_str() : nullptr);
    if (!t) return std::nullopt;
    return std::string(t);
}

FimTokens Model::fim_tokens() const {
    return FimTokens{llama_vocab_fim_pre(vocab_), llama_vocab_fim_suf(vocab_), llama_vocab_fim_mid(vocab_),
                     llama_vocab_fim_pad(vocab_), llama_vocab_fim_rep(vocab_), llama_vocab_fim_sep(vocab_)};
}

bool Model::has_tensor(const std::string &name) const { return gguf_has_tensor(path_, name); }

std::string apply_chat_template(const std::string &tmpl,
                                const std::vector<std::pair<std::string, std::string>> &messages,
                                bool add_assistant) {
    std::vector<llama_chat_message> msgs;
    msgs.reserve(messages.size());
    for (const auto &m : messages) msgs.push_back({m.first.c_str(), m.second.c_str()});
    size_t total = 0;
    for (const auto &m : messages) total += m.first.size() + m.second.size();
    std::vector<char> buf(total * 2 + 256);
    int32_t n = llama_chat_apply_template(tmpl.c_str(), msgs.data(), msgs.size(), add_assistant, buf.data(),
                                          (int32_t)buf.size());
    if (n < 0) throw InvalidArgument("chat template is not supported by llama.cpp's renderer");
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

std::string Utf8Stream::push(const std::string &piece) {
    pending_ += piece;
    const size_t hold = incomplete_utf8_tail(pending_);
    std::string ready = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, pending_.size() - hold);
    return ready;
}

std::string Utf8Stream::flush() {
    std::string rest;
    rest.swap(pending_);
    return rest;
}

}  // namespace sarai
