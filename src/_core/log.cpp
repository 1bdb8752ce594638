#include "log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "ggml.h"
#include "llama.h"

namespace sarai {
namespace {

std::atomic<int> g_log_level{GGML_LOG_LEVEL_ERROR};
std::atomic<int> g_last_level{GGML_LOG_LEVEL_INFO};
std::mutex g_last_error_mutex;
std::string g_last_error;

void log_sink(ggml_log_level level, const char *text, void * /*user*/) {
    // CONT continues the previous message and inherits its level.
    if (level == GGML_LOG_LEVEL_CONT) level = static_cast<ggml_log_level>(g_last_level.load());
    else g_last_level.store(level);
    if (level == GGML_LOG_LEVEL_ERROR) {
        std::lock_guard<std::mutex> lock(g_last_error_mutex);
        g_last_error = text ? text : "";
        while (!g_last_error.empty() && (g_last_error.back() == '\n' || g_last_error.back() == ' ')) {
            g_last_error.pop_back();
        }
    }
    if (level >= g_log_level.load() && level != GGML_LOG_LEVEL_NONE && text) {
        fputs(text, stderr);
    }
}

}  // namespace

void install_log_sink() {
    llama_log_set(log_sink, nullptr);
    ggml_log_set(log_sink, nullptr);
}

void set_log_level(int level) { g_log_level.store(level); }

std::string take_last_error() {
    std::lock_guard<std::mutex> lock(g_last_error_mutex);
    std::string out;
    out.swap(g_last_error);
    return out;
}

void clear_last_error() { take_last_error(); }

std::string with_reason(const std::string &what) {
    std::string reason = take_last_error();
    return reason.empty() ? what : what + ": " + reason;
}

}  // namespace sarai
