// Shared declarations of the pybind11 binding files (bind_*.cpp, module.cpp).
// Only these files include pybind11: they convert types (numpy arrays, bytes,
// dicts), release the GIL around long calls and translate exceptions; the
// domain code they wrap lives in namespace sarai and never touches Python.
#pragma once

#include <pybind11/pybind11.h>

namespace sarai_bind {

namespace py = pybind11;

void bind_model(py::module_ &m);    // Model and the module-level functions
void bind_context(py::module_ &m);  // SamplerParams, Sampler, ContextParams, Context
void bind_engine(py::module_ &m);   // Engine, Event

// Honours Ctrl-C between prompt batches: takes the GIL, checks for a pending
// signal and throws py::error_already_set if its handler raised.
void check_signals();

}  // namespace sarai_bind
