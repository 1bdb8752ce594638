// Chat templates, tool calls and JSON-schema grammars through llama.cpp's
// common/ library: a GGUF's own Jinja template is rendered by common's C++
// Jinja engine (never by Python, so a hostile template cannot run code), the
// family's tool-call format and the grammar that constrains it come from
// common_chat_templates_apply, and the model's answer is parsed back into
// content, reasoning and tool calls by the PEG parser that apply returned.
//
// Messages, tools and schemas cross this boundary as JSON text: the Python
// side already holds them as dicts, and common parses JSON itself. Plain C++;
// bad input (malformed messages, a template that fails, an invalid schema)
// is InvalidArgument with common's message.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "llama.h"
#include "model.h"

struct common_chat_templates;
struct common_chat_parser_params;
struct common_chat_msg;

namespace sarai {

// One chat request in OpenAI's shapes (JSON text), as the template sees it.
struct ChatInputs {
    std::string messages_json = "[]";
    std::string tools_json;               // "" or a JSON array of {"type": "function", "function": {...}}
    std::string tool_choice = "auto";     // auto | none | required
    bool parallel_tool_calls = false;
    std::string json_schema;              // "" or a JSON schema the answer must satisfy
    std::string grammar;                  // "" or the caller's GBNF (not with tools or a schema)
    bool add_generation_prompt = true;
    bool enable_thinking = true;
    std::string template_kwargs_json;     // "" or a JSON object of extra template variables
    // What the answer's thinking becomes, as llama-server's --reasoning-format: "none" leaves
    // it in content; "deepseek" (or "auto", its synonym) moves it into reasoning_content.
    // InvalidArgument for any other name.
    std::string reasoning_format = "none";
};

// What apply() decided: the prompt and how to sample and parse the answer.
struct ChatRender {
    std::string prompt;
    std::string format;                              // common's format name, e.g. "Content-only"
    std::string grammar;                             // "" when the output is free
    bool grammar_lazy = false;                       // the grammar starts at a trigger
    std::vector<std::string> trigger_patterns;       // regexes (words already escaped)
    std::vector<llama_token> trigger_tokens;
    std::vector<llama_token> preserved_tokens;       // special tokens the parser must see as text
    std::vector<std::string> additional_stops;
    std::string generation_prompt;                   // fed to the grammar and the parser first
    bool parse_tool_calls = false;
    std::shared_ptr<const common_chat_parser_params> parser;  // for ChatParser
};

// Parsed answer: JSON of an OpenAI assistant message (role, content,
// reasoning_content, tool_calls with ids).
class ChatParser {
  public:
    explicit ChatParser(const ChatRender &r);
    ~ChatParser();  // defined where common_chat_msg is complete
    // Parses the whole text generated so far; returns the deltas since the
    // last call as a JSON array of {"content"?, "reasoning_content"?,
    // "tool_call_index"?, "tool_call": {"id", "name", "arguments"}}.
    std::string update(const std::string &text, bool partial);
    std::string message_json() const;  // the last parsed message
    bool has_tool_calls() const;

  private:
    std::shared_ptr<const common_chat_parser_params> params_;
    std::unique_ptr<common_chat_msg> msg_;
    std::vector<std::string> ids_;
    std::mt19937_64 rng_;
};

class ChatTemplates {
  public:
    // `source` "" uses the model's own template (and its "tool_use" variant);
    // otherwise it is Jinja text. `model` may be null when `source` is given
    // (then `bos`/`eos` name the tokens the template sees). InvalidArgument
    // when the template does not parse.
    ChatTemplates(std::shared_ptr<Model> model, const std::string &source, const std::string &bos,
                  const std::string &eos);
    ~ChatTemplates();
    ChatTemplates(const ChatTemplates &) = delete;
    ChatTemplates &operator=(const ChatTemplates &) = delete;

    ChatRender apply(const ChatInputs &in) const;
    std::string source(const std::string &variant) const;  // "" or "tool_use"
    std::string caps_json() const;                         // what the template supports

  private:
    std::shared_ptr<Model> model_;  // kept alive: common reads the vocabulary
    common_chat_templates *tmpls_ = nullptr;
};

// GBNF for a JSON schema (common's converter). InvalidArgument for a schema
// that is not valid JSON or that the converter cannot express.
std::string json_schema_to_gbnf(const std::string &schema_json);

// Silences common's logger (it would start a worker thread and print to the
// console); errors reach the caller as exceptions instead.
void quiet_common_log();

}  // namespace sarai
