// Exceptions of the plain C++ core (namespace sarai). The binding translates
// them: InvalidArgument -> ValueError, Cancelled -> _core.Cancelled, any other
// std::runtime_error -> RuntimeError. Keeping Python types out of the domain
// code lets it run on a thread that does not hold the GIL.
#pragma once

#include <stdexcept>

namespace sarai {

// Bad input from the caller. Derives from std::invalid_argument so that
// pybind11's built-in translation already maps it to ValueError.
class InvalidArgument : public std::invalid_argument {
  public:
    using std::invalid_argument::invalid_argument;
};

// cancel() stopped a decode.
class Cancelled : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

}  // namespace sarai
