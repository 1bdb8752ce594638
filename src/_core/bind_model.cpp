// Binding of the model, the backend loader, GGUF inspection and chat templates.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <type_traits>
#include <variant>

#include "backends.h"
#include "bind.h"
#include "ggml-backend.h"
#include "grammar_check.h"
#include "gguf_check.h"
#include "log.h"
#include "membw.h"
#include "model.h"

namespace sarai_bind {

namespace {

py::dict inspect_gguf(const std::string &path) {
    sarai::GgufInfo info;
    {
        py::gil_scoped_release release;  // reading a large header touches the disk
        info = sarai::inspect_gguf(path);
    }
    py::dict meta;
    for (const auto &[key, value] : info.meta) {
        std::visit(
            [&](const auto &v) {
                using T = std::decay_t<decltype(v)>;
                if constexpr (std::is_same_v<T, std::monostate>) meta[utf8_str(key)] = py::none();
                else if constexpr (std::is_same_v<T, sarai::GgufString>) meta[utf8_str(key)] = py::bytes(v.bytes);
                else meta[utf8_str(key)] = v;
            },
            value);
    }
    meta["__n_tensors__"] = info.n_tensors;
    return meta;
}

py::dict init_backends(const std::string &libdir, const std::string &forced) {
    const sarai::BackendChoice b = sarai::init_backends(libdir, forced);
    py::dict out;
    out["variant"] = b.variant;
    out["score"] = b.score;
    out["reason"] = b.reason;
    return out;
}

}  // namespace

void bind_model(py::module_ &m) {
    using sarai::Model;
    m.def("init_backends", &init_backends, py::arg("libdir"), py::arg("forced_variant") = "",
          "Load the CPU backend (the best shipped variant, or the forced one) and initialise llama.cpp; idempotent");
    m.def("llama_version", []() { return std::string(llama_version()); });
    m.def("system_info", []() { return std::string(llama_print_system_info()); },
          "llama.cpp's own report of the CPU features its kernels use");
    m.def("backends", []() {
        std::vector<std::string> out;
        for (size_t i = 0; i < ggml_backend_reg_count(); ++i)
            out.emplace_back(ggml_backend_reg_name(ggml_backend_reg_get(i)));
        return out;
    });
    m.def("set_log_level", &sarai::set_log_level,
          "Minimum ggml log level printed to stderr (1 debug .. 4 error, 5 silent)");
    m.def("inspect_gguf", &inspect_gguf, py::arg("path"));
    m.def(
        "gguf_tensors",
        [](const std::string &path) {
            std::vector<sarai::GgufTensor> tensors;
            {
                py::gil_scoped_release release;
                tensors = sarai::gguf_tensors(path);
            }
            py::list out;
            for (const auto &t : tensors) out.append(py::make_tuple(utf8_str(t.name), t.type, t.bytes));
            return out;
        },
        py::arg("path"), "(name, ggml type name, bytes) of each tensor in the file, in file order");
    m.def(
        "read_bandwidth",
        [](size_t bytes, int threads, int passes) {
            sarai::Bandwidth b;
            {
                py::gil_scoped_release release;  // a pass reads the whole buffer: tens of ms
                b = sarai::read_bandwidth(bytes, threads, passes);
            }
            py::dict out;
            out["bytes_per_s"] = b.bytes_per_s;
            out["median_bytes_per_s"] = b.median_bytes_per_s;
            out["threads"] = b.threads;
            out["bytes"] = b.bytes;
            out["passes"] = b.passes;
            return out;
        },
        py::arg("bytes"), py::arg("threads"), py::arg("passes"),
        "Sustained memory read bandwidth of a streaming kernel (src/_core/membw.h)");
    m.def(
        "check_grammar",
        [](const std::string &text, const std::string &root, const std::shared_ptr<Model> &model) {
            const llama_vocab *vocab = model ? model->vocab() : nullptr;
            py::gil_scoped_release release;  // long grammars take a while to parse
            sarai::check_grammar(text, root, vocab);
        },
        py::arg("text"), py::arg("root") = "root", py::arg("model") = nullptr);
    m.def(
        "apply_chat_template",
        [](const std::string &tmpl, const std::vector<std::pair<std::string, std::string>> &messages, bool add) {
            return utf8_str(sarai::apply_chat_template(tmpl, messages, add));
        },
        py::arg("template"), py::arg("messages"),
          py::arg("add_assistant") = true);
    m.def("builtin_chat_templates", &sarai::builtin_chat_templates);
    m.def("supports_mmap", &llama_supports_mmap);
    m.def("supports_mlock", &llama_supports_mlock);

    py::class_<sarai::FimTokens>(m, "FimTokens")
        .def_readonly("pre", &sarai::FimTokens::pre)
        .def_readonly("suf", &sarai::FimTokens::suf)
        .def_readonly("mid", &sarai::FimTokens::mid)
        .def_readonly("pad", &sarai::FimTokens::pad)
        .def_readonly("rep", &sarai::FimTokens::rep)
        .def_readonly("sep", &sarai::FimTokens::sep);

    py::class_<Model, std::shared_ptr<Model>>(m, "Model")
        .def(py::init([](const std::string &path, bool vocab_only, bool use_mmap, bool use_mlock,
                         bool use_extra_bufts, bool check_tensors) {
                 sarai::ModelParams p{vocab_only, use_mmap, use_mlock, use_extra_bufts, check_tensors};
                 py::gil_scoped_release release;  // loading reads (and may mlock) the whole file
                 return std::make_shared<Model>(path, p);
             }),
             py::arg("path"), py::arg("vocab_only") = false, py::arg("use_mmap") = true, py::arg("use_mlock") = false,
             py::arg("use_extra_bufts") = true, py::arg("check_tensors") = false)
        .def_property_readonly("n_vocab", &Model::n_vocab)
        .def_property_readonly("n_embd", [](const Model &s) { return llama_model_n_embd_out(s.get()); })
        .def_property_readonly("n_ctx_train", [](const Model &s) { return llama_model_n_ctx_train(s.get()); })
        .def_property_readonly("n_layer", [](const Model &s) { return llama_model_n_layer(s.get()); })
        .def_property_readonly("n_params", [](const Model &s) { return llama_model_n_params(s.get()); })
        .def_property_readonly("size", [](const Model &s) { return llama_model_size(s.get()); })
        .def_property_readonly("desc", [](const Model &s) { return utf8_str(s.desc()); })
        .def_property_readonly("has_encoder", [](const Model &s) { return llama_model_has_encoder(s.get()); })
        // Recurrent (Mamba, RWKV) and hybrid (attention + recurrent) models keep state that
        // cannot be cut at a token position; llama-cpp-python exposes these facts.
        .def_property_readonly("is_recurrent", [](const Model &s) { return llama_model_is_recurrent(s.get()); })
        .def_property_readonly("is_hybrid", [](const Model &s) { return llama_model_is_hybrid(s.get()); })
        .def_property_readonly("token_bos", [](const Model &s) { return llama_vocab_bos(s.vocab()); })
        .def_property_readonly("token_eos", [](const Model &s) { return llama_vocab_eos(s.vocab()); })
        .def_property_readonly("token_eot", [](const Model &s) { return llama_vocab_eot(s.vocab()); })
        .def_property_readonly("token_nl", [](const Model &s) { return llama_vocab_nl(s.vocab()); })
        .def_property_readonly("token_sep", [](const Model &s) { return llama_vocab_sep(s.vocab()); })
        .def_property_readonly("add_bos", [](const Model &s) { return llama_vocab_get_add_bos(s.vocab()); })
        .def_property_readonly("add_eos", [](const Model &s) { return llama_vocab_get_add_eos(s.vocab()); })
        .def_property_readonly("add_sep", [](const Model &s) { return llama_vocab_get_add_sep(s.vocab()); })
        .def_property_readonly("fim_tokens", &Model::fim_tokens)
        .def("has_tensor",
             [](const Model &s, const std::string &name) {
                 py::gil_scoped_release release;  // reads the file's header
                 return s.has_tensor(name);
             },
             py::arg("name"))
        .def("is_eog", [](const Model &s, llama_token t) { return s.is_eog(t); })
        .def("tokenize",
             [](const Model &s, py::bytes text, bool add_special, bool parse_special) {
                 std::string bytes(text);
                 py::gil_scoped_release release;  // long documents take a while
                 return s.tokenize(bytes, add_special, parse_special);
             },
             py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = false)
        .def("token_to_piece", [](const Model &s, llama_token t, bool special) { return py::bytes(s.piece(t, special)); },
             py::arg("token"), py::arg("special") = false)
        .def("detokenize",
             [](const Model &s, const std::vector<llama_token> &tokens, bool special) {
                 return py::bytes(s.detokenize(tokens, special));
             },
             py::arg("tokens"), py::arg("special") = false)
        .def("metadata",
             [](const Model &s) {
                 py::dict meta;
                 // A GGUF's strings need not be UTF-8 (utf8_str escapes what is not).
                 for (const auto &[k, v] : s.metadata()) meta[utf8_str(k)] = utf8_str(v);
                 return meta;
             })
        .def(
            "chat_template",
            [](const Model &s, const std::optional<std::string> &name) -> py::object {
                auto t = s.chat_template(name);
                if (!t) return py::none();
                return utf8_str(*t);
            },
            py::arg("name") = py::none());
}

}  // namespace sarai_bind
