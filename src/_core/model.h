// A loaded llama.cpp model and its vocabulary, plus the chat-template helpers
// that only need llama.cpp's renderer. Plain C++: failures are exceptions
// (InvalidArgument for bad input, std::runtime_error for llama.cpp failures).
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "llama.h"

namespace sarai {

struct ModelParams {
    bool vocab_only = false;
    bool use_mmap = true;
    bool use_mlock = false;
    bool use_extra_bufts = true;
    bool check_tensors = false;
};

// The vocabulary's fill-in-the-middle tokens (llama_vocab_fim_*: from the GGUF's
// tokenizer.ggml.fim_*_token_id keys, or found by their text), LLAMA_TOKEN_NULL where
// it has none: prefix, suffix, middle, padding, repository name, file separator.
struct FimTokens {
    llama_token pre = LLAMA_TOKEN_NULL, suf = LLAMA_TOKEN_NULL, mid = LLAMA_TOKEN_NULL;
    llama_token pad = LLAMA_TOKEN_NULL, rep = LLAMA_TOKEN_NULL, sep = LLAMA_TOKEN_NULL;
};

class Model {
  public:
    // Validates the GGUF first (validate_gguf), so hostile files raise instead of aborting.
    Model(const std::string &path, const ModelParams &p);
    ~Model();
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;

    llama_model *get() const { return model_; }
    const llama_vocab *vocab() const { return vocab_; }
    int32_t n_vocab() const { return n_vocab_; }

    void check_token(llama_token t) const;  // InvalidArgument when out of [0, n_vocab)
    bool is_eog(llama_token t) const { return llama_vocab_is_eog(vocab_, t); }

    std::vector<llama_token> tokenize(const std::string &text, bool add_special, bool parse_special) const;
    std::string piece(llama_token t, bool special) const;
    std::string detokenize(const std::vector<llama_token> &tokens, bool special) const;
    // Tokens whose pieces (specials as text), joined, are exactly `text`: what a grammar
    // that reads this text as model output must be fed. The tokenizer's own split when
    // it gives that (a space it puts before the first piece is dropped); else the
    // vocabulary's byte tokens, one per byte, where it has them (SentencePiece byte
    // fallback: the tokenizer's split there reads back as "\u2581" where `text` had a
    // space); else the tokenizer's split, and the grammar judges it.
    std::vector<llama_token> text_tokens(const std::string &text) const;
    std::vector<std::pair<std::string, std::string>> metadata() const;
    std::string desc() const;
    std::optional<std::string> chat_template(const std::optional<std::string> &name) const;
    FimTokens fim_tokens() const;
    // Whether the file holds a tensor of this name (llama.cpp keeps no index of its
    // tensors: the GGUF header is read again). Rank pooling needs a classifier head
    // ("cls.weight" or "cls.output.weight"); without one it pools the hidden state.
    bool has_tensor(const std::string &name) const;

    // The byte a byte token (LLAMA_TOKEN_ATTR_BYTE, SentencePiece byte fallback) stands
    // for, -1 for every other token; has_byte_tokens() when the vocabulary has any.
    int byte_of(llama_token t) const { return byte_tables().token_byte[(size_t)t]; }
    bool has_byte_tokens() const { return byte_tables().any; }

  private:
    struct ByteTables {
        std::array<llama_token, 256> byte_token{};  // byte -> its token, -1 where none
        std::vector<int16_t> token_byte;            // token -> its byte, -1 for other tokens
        bool any = false;
    };
    const ByteTables &byte_tables() const;  // built on first use

    mutable std::once_flag byte_tables_once_;
    mutable ByteTables byte_tables_;
    std::string path_;
    llama_model *model_ = nullptr;
    const llama_vocab *vocab_ = nullptr;
    int32_t n_vocab_ = 0;
};

// Renders messages with llama.cpp's built-in template matcher: it recognises
// known template families and formats them in C++, so a template string can
// never execute code (unlike a Jinja template run unsandboxed).
std::string apply_chat_template(const std::string &tmpl,
                                const std::vector<std::pair<std::string, std::string>> &messages, bool add_assistant);
std::vector<std::string> builtin_chat_templates();

// Number of bytes at the end of `s` that form an incomplete UTF-8 sequence.
size_t incomplete_utf8_tail(const std::string &s);

// Incremental UTF-8 safe detokenisation of one token stream: push() returns
// only complete UTF-8 (a character split over two tokens waits for the
// second), flush() returns whatever is held at the end.
class Utf8Stream {
  public:
    std::string push(const std::string &piece);
    std::string flush();
    void reset() { pending_.clear(); }

  private:
    std::string pending_;
};

}  // namespace sarai
