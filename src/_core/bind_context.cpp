// Binding of the sampler and the one-sequence Context (the Llama path).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>

#include "bind.h"
#include "context.h"
#include "errors.h"
#include "sampler.h"

namespace sarai_bind {

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

py::array_t<float> copy_floats(const float *src, size_t n) {
    py::array_t<float> out((py::ssize_t)n);
    std::memcpy(out.mutable_data(), src, sizeof(float) * n);
    return out;
}

}  // namespace

void bind_context(py::module_ &m) {
    using sarai::Context;
    using sarai::ContextParams;
    using sarai::Model;
    using sarai::Sampler;
    using sarai::SamplerParams;

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
        .def_readwrite("grammar_lazy", &SamplerParams::grammar_lazy)
        .def_readwrite("grammar_trigger_patterns", &SamplerParams::grammar_trigger_patterns)
        .def_readwrite("grammar_trigger_tokens", &SamplerParams::grammar_trigger_tokens)
        .def_readwrite("grammar_prefill", &SamplerParams::grammar_prefill)
        .def_readwrite("logit_bias", &SamplerParams::logit_bias)
        .def_readwrite("mirostat", &SamplerParams::mirostat)
        .def_readwrite("mirostat_tau", &SamplerParams::mirostat_tau)
        .def_readwrite("mirostat_eta", &SamplerParams::mirostat_eta);

    py::class_<Sampler>(m, "Sampler")
        // The grammar and penalty samplers keep pointers into the model's vocabulary.
        .def(py::init<const Model &, const SamplerParams &>(), py::arg("model"), py::arg("params"),
             py::keep_alive<1, 2>())
        .def("accept",
             [](Sampler &s, llama_token token) {
                 if (token < 0 || token >= s.n_vocab()) throw sarai::InvalidArgument("token id out of range");
                 try {
                     s.accept(token);
                 } catch (const std::exception &e) {  // the grammar refuses it
                     throw sarai::InvalidArgument(std::string("token not accepted by the sampler: ") + e.what());
                 }
             },
             py::arg("token"))
        .def("sample",
             [](Sampler &s, FloatArray logits) {
                 if (logits.size() != (py::ssize_t)s.n_vocab())
                     throw sarai::InvalidArgument("logits must have n_vocab entries");
                 const llama_token tok = s.sample_from(logits.data(), s.n_vocab());
                 s.accept(tok);
                 return tok;
             },
             py::arg("logits"), "choose a token from n_vocab logits with the chain, and accept it")
        .def("reset", &Sampler::reset);

    // The vocabularies of ContextParams' typed fields, named as users write them (type_k="q8_0",
    // pooling_type="mean"): Python reads names and ids from here, so llama.cpp's headers are
    // their one source. The fields themselves stay ints (the ids), as llama_context_params has.
    // ("enum llama_pooling_type": llama.h also has a function of that name.)
    py::enum_<ggml_type>(m, "KVType", "ggml types a KV cache may use (ContextParams.type_k / type_v)")
        .value("f32", GGML_TYPE_F32)
        .value("f16", GGML_TYPE_F16)
        .value("q4_0", GGML_TYPE_Q4_0)
        .value("q4_1", GGML_TYPE_Q4_1)
        .value("q5_0", GGML_TYPE_Q5_0)
        .value("q5_1", GGML_TYPE_Q5_1)
        .value("q8_0", GGML_TYPE_Q8_0)
        .value("bf16", GGML_TYPE_BF16);
    m.def("bytes_per_element", [](ggml_type t) { return (double)ggml_type_size(t) / (double)ggml_blck_size(t); },
          py::arg("type"), "bytes per element of a KV type (a quantized block's bytes over its elements)");
    py::enum_<enum llama_pooling_type>(m, "Pooling", "llama.cpp's pooling types (ContextParams.pooling_type)")
        .value("unspecified", LLAMA_POOLING_TYPE_UNSPECIFIED)
        .value("none", LLAMA_POOLING_TYPE_NONE)
        .value("mean", LLAMA_POOLING_TYPE_MEAN)
        .value("cls", LLAMA_POOLING_TYPE_CLS)
        .value("last", LLAMA_POOLING_TYPE_LAST)
        .value("rank", LLAMA_POOLING_TYPE_RANK);
    py::enum_<llama_flash_attn_type>(m, "FlashAttn", "llama.cpp's flash attention modes (ContextParams.flash_attn)")
        .value("auto", LLAMA_FLASH_ATTN_TYPE_AUTO)
        .value("off", LLAMA_FLASH_ATTN_TYPE_DISABLED)
        .value("on", LLAMA_FLASH_ATTN_TYPE_ENABLED);

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
        .def_readwrite("swa_full", &ContextParams::swa_full)
        .def_readwrite("n_seq_max", &ContextParams::n_seq_max, "the engine's sequences decoded together")
        .def_readwrite("step_budget_ms", &ContextParams::step_budget_ms,
                       "the engine's target step time (ms) while sequences generate; 0: off");

    py::class_<Context>(m, "Context")
        .def(py::init([](std::shared_ptr<Model> model, const ContextParams &p) {
                 py::gil_scoped_release release;  // allocating the KV cache can take a while
                 return std::make_unique<Context>(std::move(model), p);
             }),
             py::arg("model"), py::arg("params"))
        .def_property_readonly("n_ctx", &Context::n_ctx)
        .def_property_readonly("n_batch", &Context::n_batch)
        .def("set_threads", &Context::set_threads)
        .def("clear", &Context::clear)
        .def("eval",
             [](Context &c, const std::vector<llama_token> &tokens, bool all_logits) {
                 // The whole prompt runs without the GIL; between batches the
                 // interrupt takes it back briefly to honour Ctrl-C.
                 py::gil_scoped_release release;
                 c.eval(tokens, all_logits, &check_signals);
             },
             py::arg("tokens"), py::arg("all_logits") = false)
        .def("logits", [](const Context &c, int32_t i) { return copy_floats(c.logits(i), (size_t)c.model().n_vocab()); },
             py::arg("i") = -1)
        .def("embeddings",
             [](const Context &c) {
                 return copy_floats(c.embeddings(), (size_t)c.n_embd_out());
             })
        .def("perf", [](const Context &c) { return perf_dict(c.perf()); })
        .def("perf_reset", &Context::perf_reset);
}

}  // namespace sarai_bind
