// The ggml/llama.cpp log sink. llama.cpp logs from its own worker threads, so
// the sink never calls into Python: messages at or above the chosen level go
// to stderr, and the last error is kept so that a failed call can say why.
#pragma once

#include <string>

namespace sarai {

void install_log_sink();          // routes llama.cpp's and ggml's logs through the sink
void set_log_level(int level);    // minimum ggml_log_level printed (1 debug .. 4 error, 5 silent)
void clear_last_error();          // call before an operation whose failure should carry a reason
std::string take_last_error();    // the last ERROR message since clear_last_error(), consumed
std::string with_reason(const std::string &what);  // "what: <last error>" or "what"

}  // namespace sarai
