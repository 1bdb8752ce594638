// Shared declarations of the pybind11 binding files (bind_*.cpp, module.cpp).
// Only these files include pybind11: they convert types (numpy arrays, bytes,
// dicts), release the GIL around long calls and translate exceptions; the
// domain code they wrap lives in namespace sarai and never touches Python.
#pragma once

#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "context.h"

namespace sarai_bind {

namespace py = pybind11;

void bind_model(py::module_ &m);    // Model and the module-level functions
void bind_context(py::module_ &m);  // SamplerParams, Sampler, ContextParams, Context
void bind_engine(py::module_ &m);   // Engine, Event
void bind_state_cache(py::module_ &m);  // StateCache
void bind_chat(py::module_ &m);     // ChatTemplates, ChatParser, json_schema_to_grammar
void bind_pooled(py::module_ &m);   // PooledBatch
void bind_vision(py::module_ &m);   // Vision, MediaSpan, MediaPrompt

// Every string that crosses into Python is valid UTF-8: a template, a GGUF string, a
// byte-fallback token or a message quoting one may hold any bytes, and pybind11's own
// conversion would raise UnicodeDecodeError. Bytes that are not UTF-8 come out escaped
// as \xNN (Python's "backslashreplace").
inline py::str utf8_str(const std::string &s) {
    PyObject *o = PyUnicode_DecodeUTF8(s.data(), (Py_ssize_t)s.size(), "backslashreplace");
    if (!o) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(o);
}

inline py::list utf8_list(const std::vector<std::string> &v) {
    py::list out;
    for (const auto &s : v) out.append(utf8_str(s));
    return out;
}

// Honours Ctrl-C between prompt batches: takes the GIL, checks for a pending
// signal and throws py::error_already_set if its handler raised.
void check_signals();

// llama.cpp's perf counters of a context as a dict (Context.perf and Engine.perf).
inline py::dict perf_dict(const sarai::PerfCounters &d) {
    py::dict out;
    out["t_load_ms"] = d.t_load_ms;
    out["t_p_eval_ms"] = d.t_p_eval_ms;
    out["t_eval_ms"] = d.t_eval_ms;
    out["n_p_eval"] = d.n_p_eval;
    out["n_eval"] = d.n_eval;
    out["n_reused"] = d.n_reused;
    return out;
}

}  // namespace sarai_bind
