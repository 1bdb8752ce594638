#include "chat_templates.h"

#include <exception>
#include <utility>

#include "chat.h"
#include "common.h"
#include "errors.h"
#include "json-schema-to-grammar.h"

// From common/log.h, which our own log.h shadows on the include path.
void common_log_set_verbosity_thold(int verbosity);

namespace sarai {

namespace {

// common reports bad templates, messages and schemas with std::exception
// subclasses (and its own JSON errors); all of them are bad input here.
template <typename F>
auto as_invalid_argument(const char *what, F &&f) -> decltype(f()) {
    try {
        return f();
    } catch (const InvalidArgument &) {
        throw;
    } catch (const std::exception &e) {
        throw InvalidArgument(std::string(what) + ": " + e.what());
    } catch (...) {  // thrown in libllama's own C++ runtime (the wheels: module.cpp), message unreadable
        throw InvalidArgument(std::string(what) + ": llama.cpp failed on it");
    }
}

common_json parse_json(const std::string &text, const char *name) {
    try {
        return common_json::parse(text);
    } catch (const std::exception &e) {
        throw InvalidArgument(std::string(name) + " is not valid JSON: " + e.what());
    }
}

// A word trigger that is one special token of the vocabulary triggers on that
// token (it never appears as text); any other word becomes a literal regex.
// Full-match patterns are anchored. This is llama.cpp's sampling convention.
void add_trigger(const Model *model, const common_grammar_trigger &t, const std::vector<llama_token> &preserved,
                 ChatRender &out) {
    switch (t.type) {
        case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN:
            out.trigger_tokens.push_back(t.token);
            return;
        case COMMON_GRAMMAR_TRIGGER_TYPE_WORD: {
            if (model) {
                auto ids = model->tokenize(t.value, false, true);
                if (ids.size() == 1) {
                    for (llama_token p : preserved) {
                        if (p == ids[0]) {
                            out.trigger_tokens.push_back(ids[0]);
                            return;
                        }
                    }
                }
            }
            out.trigger_patterns.push_back(regex_escape(t.value));
            return;
        }
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN:
            out.trigger_patterns.push_back(t.value);
            return;
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: {
            std::string p = t.value;
            if (p.empty() || p.front() != '^') p = "^" + p;
            if (p.size() == 1 || p.back() != '$') p += "$";
            out.trigger_patterns.push_back(p);
            return;
        }
    }
    throw InvalidArgument("chat template produced an unknown grammar trigger type");
}

}  // namespace

void quiet_common_log() {
    // Below every level common logs at: LOG_* never reaches common_log_main(),
    // so no logger thread starts and nothing bypasses the Python log sink.
    common_log_set_verbosity_thold(-1000);
}

std::string json_schema_to_gbnf(const std::string &schema_json) {
    common_json schema = parse_json(schema_json, "JSON schema");
    if (!schema.is_object() && !schema.is_boolean()) throw InvalidArgument("a JSON schema must be an object");
    return as_invalid_argument("invalid JSON schema", [&] { return json_schema_to_grammar(schema, true); });
}

// ------------------------------------------------------------ ChatTemplates

ChatTemplates::ChatTemplates(std::shared_ptr<Model> model, const std::string &source, const std::string &bos,
                             const std::string &eos)
    : model_(std::move(model)) {
    if (!model_ && source.empty()) throw InvalidArgument("a chat template needs a model or a template source");
    auto ptr = as_invalid_argument("chat template does not parse", [&] {
        return common_chat_templates_init(model_ ? model_->get() : nullptr, source, bos, eos);
    });
    tmpls_ = ptr.release();
}

ChatTemplates::~ChatTemplates() { common_chat_templates_free(tmpls_); }

std::string ChatTemplates::source(const std::string &variant) const {
    return common_chat_templates_source(tmpls_, variant);
}

std::string ChatTemplates::caps_json() const {
    common_json out = common_json::object();
    for (const auto &kv : common_chat_templates_get_caps(tmpls_)) out[kv.first] = kv.second;
    return out.dump_safe();
}

// common's name lookup throws a bare runtime_error naming nothing; this one says what is allowed.
static common_reasoning_format reasoning_format_named(const std::string &name) {
    if (name == "none") return COMMON_REASONING_FORMAT_NONE;
    if (name == "auto") return COMMON_REASONING_FORMAT_AUTO;
    if (name == "deepseek") return COMMON_REASONING_FORMAT_DEEPSEEK;
    throw InvalidArgument("reasoning_format must be none, auto or deepseek, not '" + name + "'");
}

ChatRender ChatTemplates::apply(const ChatInputs &in) const {
    common_chat_templates_inputs inputs;
    common_json messages = parse_json(in.messages_json, "messages");
    inputs.messages = as_invalid_argument("invalid messages", [&] { return common_chat_msgs_parse_oaicompat(messages); });
    if (inputs.messages.empty()) throw InvalidArgument("messages is empty");
    if (!in.tools_json.empty()) {
        common_json tools = parse_json(in.tools_json, "tools");
        inputs.tools = as_invalid_argument("invalid tools", [&] { return common_chat_tools_parse_oaicompat(tools); });
    }
    inputs.tool_choice = as_invalid_argument("invalid tool_choice",
                                             [&] { return common_chat_tool_choice_parse_oaicompat(in.tool_choice); });
    inputs.parallel_tool_calls = in.parallel_tool_calls;
    if (!in.json_schema.empty()) {
        parse_json(in.json_schema, "JSON schema");  // a clear message before common's
        inputs.json_schema = in.json_schema;
    }
    inputs.grammar = in.grammar;
    inputs.add_generation_prompt = in.add_generation_prompt;
    inputs.enable_thinking = in.enable_thinking;
    inputs.reasoning_format = reasoning_format_named(in.reasoning_format);
    inputs.use_jinja = true;
    if (!in.template_kwargs_json.empty()) {
        common_json kw = parse_json(in.template_kwargs_json, "chat_template_kwargs");
        if (!kw.is_object()) throw InvalidArgument("chat_template_kwargs must be a JSON object");
        for (auto it = kw.begin(); it != kw.end(); ++it) inputs.chat_template_kwargs[it.key()] = it.value().dump();
    }

    common_chat_params params =
        as_invalid_argument("chat template failed", [&] { return common_chat_templates_apply(tmpls_, inputs); });

    ChatRender out;
    out.prompt = std::move(params.prompt);
    out.format = common_chat_format_name(params.format);
    out.grammar = std::move(params.grammar);
    out.grammar_lazy = params.grammar_lazy;
    out.generation_prompt = params.generation_prompt;
    out.additional_stops = std::move(params.additional_stops);
    out.parse_tool_calls = !inputs.tools.empty() && inputs.tool_choice != COMMON_CHAT_TOOL_CHOICE_NONE;
    const Model *model = model_.get();
    if (model) {
        for (const auto &t : params.preserved_tokens) {
            auto ids = model->tokenize(t, false, true);
            if (ids.size() == 1) out.preserved_tokens.push_back(ids[0]);
        }
    }
    for (const auto &t : params.grammar_triggers) add_trigger(model, t, out.preserved_tokens, out);
    if (out.grammar_lazy && out.trigger_patterns.empty() && out.trigger_tokens.empty())
        throw InvalidArgument("chat template asked for a lazy grammar without triggers");

    auto pp = std::make_shared<common_chat_parser_params>(params);
    pp->parse_tool_calls = out.parse_tool_calls;
    pp->reasoning_format = inputs.reasoning_format;
    if (!params.parser.empty()) {
        as_invalid_argument("chat template's output parser", [&] {
            pp->parser.load(params.parser);
            return 0;
        });
    }
    out.parser = std::move(pp);
    return out;
}

// ------------------------------------------------------------ ChatParser

ChatParser::ChatParser(const ChatRender &r)
    : params_(r.parser), msg_(std::make_unique<common_chat_msg>()), rng_(std::random_device{}()) {
    if (!params_) throw InvalidArgument("ChatParser needs a ChatRender from ChatTemplates.apply");
    msg_->role = "assistant";
}

ChatParser::~ChatParser() = default;

std::string ChatParser::update(const std::string &text, bool partial) {
    common_chat_msg next;
    try {
        next = common_chat_parse(text, partial, *params_);
    } catch (const std::exception &e) {
        if (partial) return "[]";  // more text may make it parse
        // The final text does not match the format: keep it all as content,
        // which is what the model said, rather than losing it.
        next = common_chat_msg();
        next.content = text;
    }
    next.role = "assistant";
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    next.set_tool_call_ids(ids_, [this] {
        std::string id = "call_";
        for (int i = 0; i < 24; ++i) id += alnum[rng_() % (sizeof(alnum) - 1)];
        return id;
    });
    common_json deltas = common_json::array();
    for (const auto &d : common_chat_msg_diff::compute_diffs(*msg_, next)) {
        common_json o = common_json::object();
        if (!d.reasoning_content_delta.empty()) o["reasoning_content"] = d.reasoning_content_delta;
        if (!d.content_delta.empty()) o["content"] = d.content_delta;
        if (d.tool_call_index != std::string::npos) {
            o["tool_call_index"] = (int64_t)d.tool_call_index;
            common_json call = common_json::object();
            call["id"] = d.tool_call_delta.id;
            call["name"] = d.tool_call_delta.name;
            call["arguments"] = d.tool_call_delta.arguments;
            o["tool_call"] = call;
        }
        deltas.push_back(o);
    }
    *msg_ = std::move(next);
    return deltas.dump_safe();
}

std::string ChatParser::message_json() const {
    common_json out = common_json::object();
    out["role"] = "assistant";
    out["content"] = msg_->content;
    if (!msg_->reasoning_content.empty()) out["reasoning_content"] = msg_->reasoning_content;
    common_json calls = common_json::array();
    for (const auto &c : msg_->tool_calls) {
        common_json call = common_json::object();
        call["id"] = c.id;
        call["name"] = c.name;
        call["arguments"] = c.arguments;
        calls.push_back(call);
    }
    out["tool_calls"] = calls;
    return out.dump_safe();
}

bool ChatParser::has_tool_calls() const { return !msg_->tool_calls.empty(); }

}  // namespace sarai
