// Binding of PooledBatch: many inputs pooled per decode (rerank scores, embeddings).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>

#include "bind.h"
#include "pooled.h"

namespace sarai_bind {

void bind_pooled(py::module_ &m) {
    using sarai::ContextParams;
    using sarai::Model;
    using sarai::PooledBatch;

    py::class_<PooledBatch>(m, "PooledBatch")
        .def(py::init([](std::shared_ptr<Model> model, const ContextParams &p, uint32_t n_seq) {
                 py::gil_scoped_release release;  // allocating the context can take a while
                 return std::make_unique<PooledBatch>(std::move(model), p, n_seq);
             }),
             py::arg("model"), py::arg("params"), py::arg("n_seq"))
        .def_property_readonly("n_batch", &PooledBatch::n_batch)
        .def_property_readonly("n_seq", &PooledBatch::n_seq)
        .def_property_readonly("pooling_type", &PooledBatch::pooling_type)
        .def_property_readonly("n_out", &PooledBatch::n_out)
        .def_property_readonly("n_decodes", &PooledBatch::n_decodes)
        .def(
            "run",
            [](PooledBatch &b, const std::vector<std::vector<llama_token>> &inputs) {
                py::gil_scoped_release release;  // the decodes run without the GIL; Ctrl-C between them
                return b.run(inputs, &check_signals);
            },
            py::arg("inputs"))
        .def("perf", [](const PooledBatch &b) { return perf_dict(b.perf()); });
}

}  // namespace sarai_bind
