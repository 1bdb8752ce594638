// Binding of sarai::StateCache: the store both drivers share (the server's
// engine, Llama's LlamaRAMCache/LlamaDiskCache views). Loading a disk file and
// writing one run without the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>

#include "bind.h"
#include "state_cache.h"

namespace sarai_bind {

void bind_state_cache(py::module_ &m) {
    using sarai::StateCache;
    py::class_<StateCache, std::shared_ptr<StateCache>>(
        m, "StateCache",
        "Sequence KV states kept in host RAM (and optionally on disk), keyed by their tokens; LRU up to a byte "
        "budget. Engines of the same model and layout may share one.")
        .def(py::init([](uint64_t ram_bytes, const std::string &identity) {
                 return std::make_shared<StateCache>(ram_bytes, identity);
             }),
             py::arg("ram_bytes"), py::arg("identity"))
        .def_property("budget", &StateCache::budget, &StateCache::set_budget,
                      "RAM budget in bytes (0: nothing is kept); lowering it evicts at once")
        .def_property_readonly("identity", [](const StateCache &c) { return utf8_str(c.identity()); })
        .def("bind", &StateCache::bind, py::arg("identity"), py::call_guard<py::gil_scoped_release>(),
             "Bind an unbound cache (identity \"\") to a model's identity and index its disk files; "
             "ValueError when it holds another model's states")
        .def_property_readonly("disk_dir", [](const StateCache &c) { return utf8_str(c.disk_dir()); })
        .def_property_readonly("disk_budget", &StateCache::disk_budget, "The disk tier's budget in bytes")
        .def("put",
             [](StateCache &c, std::vector<llama_token> tokens, py::bytes data, uint32_t min_prefix) {
                 sarai::CachedState s;
                 s.tokens = std::move(tokens);
                 s.data = std::string(data);
                 s.min_prefix = std::max<uint32_t>(1, min_prefix);
                 py::gil_scoped_release release;
                 return c.put(std::move(s));
             },
             py::arg("tokens"), py::arg("data"), py::arg("min_prefix") = 1,
             "Keep a state of these tokens (serving prefixes from min_prefix tokens on); False when it fits "
             "no budget")
        .def("find",
             [](StateCache &c, const std::vector<llama_token> &prompt, size_t limit, size_t at_least) -> py::object {
                 StateCache::Match m;
                 {
                     py::gil_scoped_release release;
                     m = c.find(prompt, limit, at_least);
                 }
                 if (!m.state) return py::none();
                 return py::make_tuple(m.n, m.state->tokens, py::bytes(m.state->data), m.state->min_prefix);
             },
             py::arg("prompt"), py::arg("limit"), py::arg("at_least") = 0,
             "(n, tokens, data, min_prefix) of the entry giving the longest prefix of prompt (n tokens, at most "
             "limit, more than at_least), now the most recently used; None when none")
        .def("peek", &StateCache::peek, py::arg("prompt"), py::arg("limit"),
             "(n, tokens): what find would give, without using, loading or counting anything ((0, []): none)")
        .def("set_disk", &StateCache::set_disk, py::arg("dir"), py::arg("disk_bytes"),
             py::call_guard<py::gil_scoped_release>(),
             "Write states through to files in dir (up to disk_bytes); index the files already there. "
             "An empty dir turns the disk tier off.")
        .def("clear", &StateCache::clear, "Drop the RAM entries (the disk tier's files stay)")
        .def("take_warnings", [](StateCache &c) {
            py::list out;
            for (const auto &w : c.take_warnings()) out.append(utf8_str(w));
            return out;
        })
        .def("stats", [](const StateCache &c) {
            sarai::StateCacheStats s;
            {
                py::gil_scoped_release release;
                s = c.stats();
            }
            py::dict d;
            d["hits"] = s.hits;
            d["misses"] = s.misses;
            d["restored_tokens"] = s.restored_tokens;
            d["saves"] = s.saves;
            d["evictions"] = s.evictions;
            d["entries"] = s.entries;
            d["bytes"] = s.bytes;
            d["budget_bytes"] = s.budget_bytes;
            d["disk_entries"] = s.disk_entries;
            d["disk_bytes"] = s.disk_bytes;
            d["disk_budget_bytes"] = s.disk_budget_bytes;
            d["disk_loads"] = s.disk_loads;
            d["disk_rejected"] = s.disk_rejected;
            return d;
        });
}

}  // namespace sarai_bind
