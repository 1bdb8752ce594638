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

#include <stdexcept>

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

    // The C++ exceptions become the Python types pybind11 would choose
    // (InvalidArgument is a std::invalid_argument: ValueError), Cancelled its own
    // type, and every message is made valid UTF-8 first: a message may quote a
    // token's raw bytes, and pybind11's own translation would then raise
    // UnicodeDecodeError instead. Python's own errors and pybind11's builtin
    // exceptions pass through to pybind11's translator untouched.
    static py::exception<sarai::Cancelled> cancelled_exc(m, "Cancelled", PyExc_RuntimeError);
    py::register_exception_translator([](std::exception_ptr p) {
        auto set = [](PyObject *type, const char *what) { PyErr_SetObject(type, sarai_bind::utf8_str(what).ptr()); };
        try {
            if (p) std::rethrow_exception(p);
        } catch (const py::error_already_set &) {
            throw;
        } catch (const py::builtin_exception &) {
            throw;
        } catch (const std::bad_alloc &) {
            throw;
        } catch (const sarai::Cancelled &e) {
            set(cancelled_exc.ptr(), e.what());
        } catch (const std::out_of_range &e) {
            set(PyExc_IndexError, e.what());
        } catch (const std::overflow_error &e) {
            set(PyExc_OverflowError, e.what());
        } catch (const std::logic_error &e) {  // invalid_argument, domain_error, length_error
            set(PyExc_ValueError, e.what());
        } catch (const std::range_error &e) {
            set(PyExc_ValueError, e.what());
        } catch (const std::exception &e) {
            set(PyExc_RuntimeError, e.what());
        } catch (...) {
            // In the manylinux wheels each shared library links its own libc++, so an
            // exception thrown in libllama or ggml is of a type this module cannot
            // match or read. _core keeps the throwing code it knows of in this module
            // (CMakeLists.txt: llama-grammar.cpp); this is the last resort.
            set(PyExc_RuntimeError, "llama.cpp failed with a C++ exception of a type this module cannot read");
        }
    });

    m.attr("LLAMA_COMMIT") = SARAI_LLAMA_COMMIT;
    sarai_bind::bind_model(m);
    sarai_bind::bind_context(m);
    sarai_bind::bind_state_cache(m);
    sarai_bind::bind_engine(m);
    sarai_bind::bind_chat(m);
    sarai_bind::bind_pooled(m);
    sarai_bind::bind_vision(m);
}
