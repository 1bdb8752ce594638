#include "bind.h"
namespace sarai_bind {
void bind_engine(py::module_ &) {}
}  // namespace sarai_bind
