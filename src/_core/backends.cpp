#include "backends.h"

#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <vector>

#if defined(SARAI_BACKEND_DL)
#include <dlfcn.h>
#endif

#include "errors.h"
#include "ggml-backend.h"
#include "llama.h"
#include "log.h"

namespace sarai {
namespace {

// The choice is the one ggml's loader makes, the highest ggml_backend_score(),
// but we keep its name so the user can see which kernels run.
BackendChoice g_backend;

#if defined(SARAI_BACKEND_DL)
int variant_score(const std::filesystem::path &path) {
    void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) return -1;
    using score_fn = int (*)();
    auto fn = reinterpret_cast<score_fn>(dlsym(handle, "ggml_backend_score"));
    const int score = fn ? fn() : -1;
    dlclose(handle);
    return score;
}

std::string variant_name(const std::filesystem::path &path) {
    std::string stem = path.filename().string();
    const std::string prefix = "libggml-cpu-", suffix = ".so";
    if (stem.rfind(prefix, 0) == 0) stem = stem.substr(prefix.size());
    if (stem.size() > suffix.size() && stem.compare(stem.size() - suffix.size(), suffix.size(), suffix) == 0)
        stem.resize(stem.size() - suffix.size());
    return stem;
}
#endif

}  // namespace

BackendChoice init_backends(const std::string &libdir, const std::string &forced) {
    if (!g_backend.variant.empty()) return g_backend;
#if defined(SARAI_BACKEND_DL)
    namespace fs = std::filesystem;
    std::vector<fs::path> candidates;
    std::error_code ec;
    for (const auto &entry : fs::directory_iterator(libdir, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind("libggml-cpu-", 0) == 0 && name.size() > 3 && name.compare(name.size() - 3, 3, ".so") == 0)
            candidates.push_back(entry.path());
    }
    if (candidates.empty()) throw std::runtime_error("no CPU backend modules in " + libdir);
    fs::path chosen;
    int best = 0;
    std::string available;
    for (const auto &c : candidates) available += (available.empty() ? "" : ", ") + variant_name(c);
    std::string reason;
    if (!forced.empty()) {
        chosen = fs::path(libdir) / ("libggml-cpu-" + forced + ".so");
        if (!fs::exists(chosen))
            throw InvalidArgument("SARAI_CPU_VARIANT=" + forced + " is not shipped; available: " + available);
        best = variant_score(chosen);
        if (best <= 0)
            throw std::runtime_error("SARAI_CPU_VARIANT=" + forced + ": this CPU lacks the instructions it needs");
        reason = "forced by SARAI_CPU_VARIANT";
    } else {
        for (const auto &c : candidates) {
            const int sc = variant_score(c);
            if (sc > best) {
                best = sc;
                chosen = c;
            }
        }
        if (chosen.empty()) throw std::runtime_error("no CPU backend module supports this CPU (" + available + ")");
        reason = "highest score of " + std::to_string(candidates.size()) + " shipped variants";
    }
    clear_last_error();
    if (!ggml_backend_load(chosen.c_str())) throw std::runtime_error(with_reason("failed to load " + chosen.string()));
    g_backend.variant = variant_name(chosen);
    g_backend.score = best;
    g_backend.reason = reason;
#else
    (void)libdir;
    if (!forced.empty()) throw InvalidArgument("SARAI_CPU_VARIANT applies to the portable build; this is a native build");
    g_backend.variant = "static";
    g_backend.reason = "native build: one CPU backend compiled for this machine";
#endif
    llama_backend_init();
    return g_backend;
}

}  // namespace sarai
