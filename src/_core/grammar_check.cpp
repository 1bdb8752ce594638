#include "grammar_check.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "errors.h"
#include "llama-grammar.h"  // llama.cpp's parser, compiled into _core (CMakeLists.txt): its messages

namespace sarai {
namespace {

// The rest of the text after an error position, shortened for a message.
std::string excerpt(const std::string &message) {
    constexpr size_t kMax = 160;
    if (message.size() <= kMax) return message;
    return message.substr(0, kMax) + "...";
}

// Deepest parenthesis nesting outside strings, character classes and comments.
int paren_depth(const std::string &text) {
    int depth = 0, deepest = 0;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '#') {
            while (i < text.size() && text[i] != '\n' && text[i] != '\r') ++i;
        } else if (c == '"' || c == '[') {
            const char close = c == '"' ? '"' : ']';
            for (++i; i < text.size() && text[i] != close; ++i) {
                if (text[i] == '\\') ++i;  // an escaped quote or bracket does not close
            }
        } else if (c == '(') {
            deepest = std::max(deepest, ++depth);
        } else if (c == ')') {
            depth = std::max(0, depth - 1);
        }
    }
    return deepest;
}

// Longest chain of rules whose alternatives start with a reference to the next
// one (what llama.cpp's stack advance and left-recursion check recurse along).
// Iterative, so a hostile chain cannot overflow this check itself; a cycle is
// left to llama.cpp, which refuses left recursion with its own message.
size_t leading_ref_depth(const llama_grammar_rules &rules) {
    const size_t n = rules.size();
    std::vector<std::vector<uint32_t>> next(n);
    for (size_t r = 0; r < n; ++r) {
        bool at_start = true;
        for (const auto &e : rules[r]) {
            if (at_start && e.type == LLAMA_GRETYPE_RULE_REF && e.value < n) next[r].push_back(e.value);
            at_start = e.type == LLAMA_GRETYPE_ALT;
        }
    }
    std::vector<size_t> depth(n, 0);
    std::vector<uint8_t> state(n, 0);  // 0 new, 1 on the path, 2 done
    size_t deepest = 0;
    for (size_t start = 0; start < n; ++start) {
        if (state[start]) continue;
        std::vector<std::pair<uint32_t, size_t>> stack{{(uint32_t)start, 0}};
        state[start] = 1;
        while (!stack.empty()) {
            auto &[r, i] = stack.back();
            if (i < next[r].size()) {
                const uint32_t m = next[r][i++];
                if (state[m] == 0) {
                    state[m] = 1;
                    stack.push_back({m, 0});
                }
                continue;
            }
            size_t d = 1;
            for (uint32_t m : next[r]) {
                if (state[m] == 2) d = std::max(d, depth[m] + 1);
            }
            depth[r] = d;
            state[r] = 2;
            deepest = std::max(deepest, d);
            stack.pop_back();
        }
    }
    return deepest;
}

}  // namespace

void check_grammar(const std::string &text, const std::string &root, const llama_vocab *vocab) {
    const int parens = paren_depth(text);
    if (parens > kMaxGrammarDepth)
        throw InvalidArgument("grammar nests parentheses " + std::to_string(parens) + " deep; at most " +
                              std::to_string(kMaxGrammarDepth) + " are supported");
    llama_grammar_parser parser(vocab);
    const char *pos = text.c_str();
    try {
        // The rules one by one, as llama.cpp's parse() does, but keeping the
        // parser's message (parse() prints it to stderr and returns false).
        while (*pos == ' ' || *pos == '\t' || *pos == '\r' || *pos == '\n' || *pos == '#') {
            if (*pos == '#') {
                while (*pos && *pos != '\r' && *pos != '\n') ++pos;
            } else {
                ++pos;
            }
        }
        while (*pos) pos = parser.parse_rule(pos);
    } catch (const std::exception &e) {
        const std::string what = e.what();
        if (vocab == nullptr && what.rfind("no vocab to parse token", 0) == 0) return;  // checked with the model
        // The parser's messages end with the rest of the text ("expecting ')' at ...").
        const bool at_end = what.size() >= 3 && what.compare(what.size() - 3, 3, "at ") == 0;
        throw InvalidArgument("grammar does not parse: " + excerpt(what) + (at_end ? "the end" : ""));
    }
    if (parser.rules.empty()) throw InvalidArgument("grammar has no rules");
    for (const auto &[name, id] : parser.symbol_ids) {
        if (id >= parser.rules.size() || parser.rules[id].empty())
            throw InvalidArgument("grammar does not parse: undefined rule '" + name + "'");
    }
    if (parser.symbol_ids.find(root) == parser.symbol_ids.end())
        throw InvalidArgument("grammar has no rule named '" + root + "' (its start rule)");
    if (vocab != nullptr) {  // <[id]> is taken as written by the parser; the matcher would fail mid-generation
        const uint32_t n_vocab = (uint32_t)llama_vocab_n_tokens(vocab);
        for (const auto &rule : parser.rules) {
            for (const auto &e : rule) {
                if ((e.type == LLAMA_GRETYPE_TOKEN || e.type == LLAMA_GRETYPE_TOKEN_NOT) && e.value >= n_vocab)
                    throw InvalidArgument("grammar refers to token id " + std::to_string(e.value) +
                                          ", out of range [0, " + std::to_string(n_vocab) + ")");
            }
        }
    }
    const size_t chain = leading_ref_depth(parser.rules);
    if (chain > (size_t)kMaxGrammarDepth)
        throw InvalidArgument("grammar's rules lead into each other " + std::to_string(chain) + " deep; at most " +
                              std::to_string(kMaxGrammarDepth) + " are supported");
}

}  // namespace sarai
