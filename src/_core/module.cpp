// sarai_llama._core: the thin pybind11 layer over llama.cpp's C API.
//
// Policy (defaults, dict shapes, thread counts, chat formats) lives in Python.
// What lives in C++ is what must not cross the interpreter per token or must
// not hold the GIL: model loading, batched decoding, sampling, incremental
// UTF-8 safe detokenisation, and the multi-sequence engine. Every llama.cpp
// failure becomes a C++ exception that pybind11 turns into a Python one;
// nothing may abort the process on bad input, so inputs are checked before
// they reach llama.cpp.

#include <pybind11/pybind11.h>

#include "bind.h"
#include "errors.h"
#include "log.h"

namespace sarai_bind {

void check_signals() {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

}  // namespace sarai_bind

PYBIND11_MODULE(_core, m) {
    namespace py = pybind11;
    m.doc() = "Thin binding of llama.cpp (see sarai_llama for the Python API)";

    sarai::install_log_sink();

    // sarai::InvalidArgument derives from std::invalid_argument, which
    // pybind11 already maps to ValueError; Cancelled needs its own type.
    static py::exception<sarai::Cancelled> cancelled_exc(m, "Cancelled", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const sarai::Cancelled &e) {
            py::set_error(cancelled_exc, e.what());
        }
    });

    m.attr("LLAMA_COMMIT") = SARAI_LLAMA_COMMIT;
    sarai_bind::bind_model(m);
    sarai_bind::bind_context(m);
    sarai_bind::bind_engine(m);
    sarai_bind::bind_chat(m);
}
