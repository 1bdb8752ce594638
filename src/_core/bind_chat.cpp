// Binding of chat_templates.h: ChatTemplates, ChatInputs, ChatRender,
// ChatParser and json_schema_to_grammar. JSON stays text across the boundary.

#include <pybind11/stl.h>

#include "bind.h"
#include "chat_templates.h"

namespace sarai_bind {

void bind_chat(py::module_ &m) {
    using namespace sarai;
    sarai::quiet_common_log();

    m.def(
        "json_schema_to_grammar", [](const std::string &schema) { return utf8_str(json_schema_to_gbnf(schema)); },
        py::arg("schema_json"),
          "GBNF text for a JSON schema given as JSON text (ValueError when invalid).");

    py::class_<ChatInputs>(m, "ChatInputs")
        .def(py::init<>())
        .def_readwrite("messages_json", &ChatInputs::messages_json)
        .def_readwrite("tools_json", &ChatInputs::tools_json)
        .def_readwrite("tool_choice", &ChatInputs::tool_choice)
        .def_readwrite("parallel_tool_calls", &ChatInputs::parallel_tool_calls)
        .def_readwrite("json_schema", &ChatInputs::json_schema)
        .def_readwrite("grammar", &ChatInputs::grammar)
        .def_readwrite("add_generation_prompt", &ChatInputs::add_generation_prompt)
        .def_readwrite("enable_thinking", &ChatInputs::enable_thinking)
        .def_readwrite("template_kwargs_json", &ChatInputs::template_kwargs_json)
        .def_readwrite("reasoning_format", &ChatInputs::reasoning_format);

    // Text fields through utf8_str (bind.h): a template may hold any bytes.
    py::class_<ChatRender>(m, "ChatRender")
        .def_property_readonly("prompt", [](const ChatRender &r) { return utf8_str(r.prompt); })
        .def_property_readonly("format", [](const ChatRender &r) { return utf8_str(r.format); })
        .def_property_readonly("grammar", [](const ChatRender &r) { return utf8_str(r.grammar); })
        .def_readonly("grammar_lazy", &ChatRender::grammar_lazy)
        .def_property_readonly("trigger_patterns", [](const ChatRender &r) { return utf8_list(r.trigger_patterns); })
        .def_readonly("trigger_tokens", &ChatRender::trigger_tokens)
        .def_readonly("preserved_tokens", &ChatRender::preserved_tokens)
        .def_property_readonly("additional_stops", [](const ChatRender &r) { return utf8_list(r.additional_stops); })
        .def_property_readonly("generation_prompt", [](const ChatRender &r) { return utf8_str(r.generation_prompt); })
        .def_readonly("parse_tool_calls", &ChatRender::parse_tool_calls);

    py::class_<ChatParser>(m, "ChatParser")
        .def(py::init<const ChatRender &>(), py::arg("render"))
        .def(
            "update", [](ChatParser &p, const std::string &text, bool partial) { return utf8_str(p.update(text, partial)); },
            py::arg("text"), py::arg("partial"))
        .def("message_json", [](const ChatParser &p) { return utf8_str(p.message_json()); })
        .def_property_readonly("has_tool_calls", &ChatParser::has_tool_calls);

    py::class_<ChatTemplates>(m, "ChatTemplates")
        .def(py::init([](std::shared_ptr<Model> model, const std::string &source, const std::string &bos,
                         const std::string &eos) {
                 py::gil_scoped_release release;  // parses the template
                 return std::make_unique<ChatTemplates>(std::move(model), source, bos, eos);
             }),
             py::arg("model").none(true), py::arg("source") = "", py::arg("bos_token") = "", py::arg("eos_token") = "")
        .def("apply", &ChatTemplates::apply, py::arg("inputs"), py::call_guard<py::gil_scoped_release>())
        .def(
            "source", [](const ChatTemplates &t, const std::string &variant) { return utf8_str(t.source(variant)); },
            py::arg("variant") = "")
        .def("caps_json", [](const ChatTemplates &t) { return utf8_str(t.caps_json()); });
}

}  // namespace sarai_bind
