// Binding of chat_templates.h: ChatTemplates, ChatInputs, ChatRender,
// ChatParser and json_schema_to_grammar. JSON stays text across the boundary.

#include <pybind11/stl.h>

#include "bind.h"
#include "chat_templates.h"

namespace sarai_bind {

void bind_chat(py::module_ &m) {
    using namespace sarai;
    sarai::quiet_common_log();

    m.def("json_schema_to_grammar", &json_schema_to_gbnf, py::arg("schema_json"),
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
        .def_readwrite("template_kwargs_json", &ChatInputs::template_kwargs_json);

    py::class_<ChatRender>(m, "ChatRender")
        .def_readonly("prompt", &ChatRender::prompt)
        .def_readonly("format", &ChatRender::format)
        .def_readonly("grammar", &ChatRender::grammar)
        .def_readonly("grammar_lazy", &ChatRender::grammar_lazy)
        .def_readonly("trigger_patterns", &ChatRender::trigger_patterns)
        .def_readonly("trigger_tokens", &ChatRender::trigger_tokens)
        .def_readonly("preserved_tokens", &ChatRender::preserved_tokens)
        .def_readonly("additional_stops", &ChatRender::additional_stops)
        .def_readonly("generation_prompt", &ChatRender::generation_prompt)
        .def_readonly("parse_tool_calls", &ChatRender::parse_tool_calls);

    py::class_<ChatParser>(m, "ChatParser")
        .def(py::init<const ChatRender &>(), py::arg("render"))
        .def("update", &ChatParser::update, py::arg("text"), py::arg("partial"))
        .def("message_json", &ChatParser::message_json)
        .def_property_readonly("has_tool_calls", &ChatParser::has_tool_calls);

    py::class_<ChatTemplates>(m, "ChatTemplates")
        .def(py::init([](std::shared_ptr<Model> model, const std::string &source, const std::string &bos,
                         const std::string &eos) {
                 py::gil_scoped_release release;  // parses the template
                 return std::make_unique<ChatTemplates>(std::move(model), source, bos, eos);
             }),
             py::arg("model").none(true), py::arg("source") = "", py::arg("bos_token") = "", py::arg("eos_token") = "")
        .def("apply", &ChatTemplates::apply, py::arg("inputs"), py::call_guard<py::gil_scoped_release>())
        .def("source", &ChatTemplates::source, py::arg("variant") = "")
        .def("caps_json", &ChatTemplates::caps_json);
}

}  // namespace sarai_bind
