// GBNF grammar text checked with llama.cpp's own parser before any sampler
// uses it, so that a grammar that does not parse is refused with the parser's
// message (llama.cpp's public API only logs "failed to parse grammar"), and a
// grammar deep enough to overflow the parser's or the matcher's recursion is
// refused before it can take the process down with a stack overflow.
#pragma once

#include <string>

struct llama_vocab;

namespace sarai {

// How deep parentheses may nest and rule references may lead into each other.
// llama.cpp's parser and matcher recurse once (or twice) per level; real
// grammars, including those generated from JSON schemas, stay far below this,
// and it keeps the recursion within a 128 KiB thread stack.
constexpr int kMaxGrammarDepth = 256;

// Throws InvalidArgument naming what is wrong. With vocab == nullptr (no model
// yet) token references (<...>) cannot be resolved: the text before the first
// one is checked, and the model's sampler checks the rest.
void check_grammar(const std::string &text, const std::string &root, const llama_vocab *vocab);

}  // namespace sarai
