// Binding of sarai::Engine. step() runs entirely without the GIL; its events
// come back as small bound structs (one Python object per event, per token).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "bind.h"
#include "engine.h"

namespace sarai_bind {

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

py::list to_list(std::vector<sarai::Event> &&events) {
    py::list out(events.size());
    for (size_t i = 0; i < events.size(); ++i) out[i] = py::cast(std::move(events[i]));
    return out;
}

py::dict stats_dict(const sarai::EngineStats &s) {
    py::dict d;
    d["n_steps"] = s.n_steps;
    d["n_decode_calls"] = s.n_decode_calls;
    d["n_batch_tokens"] = s.n_batch_tokens;
    d["n_sampled"] = s.n_sampled;
    d["t_step_ms"] = s.t_step_ms;
    d["t_decode_ms"] = s.t_decode_ms;
    d["n_prompt_tokens"] = s.n_prompt_tokens;
    d["n_budgeted_steps"] = s.n_budgeted_steps;
    d["max_prompt_beside_gen"] = s.max_prompt_beside_gen;
    d["last_gen_rows"] = s.last_gen_rows;
    d["last_prompt_tokens"] = s.last_prompt_tokens;
    d["last_budget"] = s.last_budget;
    d["logits_row_ms"] = s.logits_row_ms;
    d["prompt_token_ms"] = s.prompt_token_ms;
    d["n_drafted"] = s.n_drafted;
    d["n_draft_accepted"] = s.n_draft_accepted;
    d["n_spec_steps"] = s.n_spec_steps;
    d["step_fixed_ms"] = s.step_fixed_ms;
    d["step_row_ms"] = s.step_row_ms;
    return d;
}

}  // namespace

void bind_engine(py::module_ &m) {
    using sarai::Engine;
    using sarai::Event;

    py::enum_<sarai::EventKind> kind(m, "EventKind", "What an Event says happened (Event.kind)");
    kind.value("TOKEN", sarai::EventKind::Token)
        .value("DONE", sarai::EventKind::Done)
        .value("ERROR", sarai::EventKind::Error)
        .value("NEED_TOKEN", sarai::EventKind::NeedToken);
    py::class_<Event> ev(m, "Event", "One thing that happened to one request during Engine.step()");
    for (const char *name : {"TOKEN", "DONE", "ERROR", "NEED_TOKEN"}) ev.attr(name) = kind.attr(name);  // short names
    ev.def_readonly("id", &Event::id)
        .def_property_readonly("kind", [](const Event &e) { return e.kind; })  // a copy: no tie to the event
        .def_readonly("token", &Event::token)
        .def_property_readonly("text", [](const Event &e) { return py::bytes(e.text); })
        .def_readonly("eog", &Event::eog)
        .def_readonly("logprob", &Event::logprob)
        .def_readonly("top", &Event::top)
        .def_readonly("finish_reason", &Event::finish_reason)
        .def_property_readonly("error", [](const Event &e) { return utf8_str(e.error); })
        .def_readonly("n_prompt", &Event::n_prompt)
        .def_readonly("n_reused", &Event::n_reused)
        .def_readonly("n_generated", &Event::n_generated)
        .def_readonly("n_drafted", &Event::n_drafted)
        .def_readonly("n_draft_accepted", &Event::n_draft_accepted)
        .def_property_readonly("speculation", [](const Event &e) { return utf8_str(e.speculation); })
        .def("__repr__", [](const Event &e) {
            const auto kind = py::cast(e.kind).attr("name").cast<std::string>();
            return utf8_str("<Event id=" + std::to_string(e.id) + " " + kind + " token=" +
                   std::to_string(e.token) + (e.finish_reason.empty() ? "" : " finish=" + e.finish_reason) +
                   (e.error.empty() ? "" : " error=" + e.error) + ">");
        });

    m.def(
        "choose_draft_lengths",
        [](const std::vector<std::pair<int32_t, double>> &steps,
           const std::vector<std::tuple<double, int32_t, int32_t>> &candidates, int32_t n_gen, int32_t max_rows,
           double max_ms) {
            sarai::StepCostLine line;
            for (const auto &[rows, ms] : steps) line.observe(rows, ms);
            std::vector<sarai::DraftCandidate> cands;
            for (const auto &[p, n_avail, n_min] : candidates) {
                sarai::DraftCandidate c;
                c.p = p;
                c.n_avail = n_avail;
                c.n_min = n_min;
                cands.push_back(c);
            }
            sarai::choose_draft_lengths(cands, line, n_gen, max_rows, max_ms);
            std::vector<int32_t> out;
            for (const auto &c : cands) out.push_back(c.chosen);
            return out;
        },
        py::arg("steps"), py::arg("candidates"), py::arg("n_gen"), py::arg("max_rows"), py::arg("max_ms") = 0.0,
        "The engine's draft lengths (spec.h) after decode-only steps `steps` [(rows, ms)], for candidates "
        "[(p, n_avail, n_min)]: the speculation policy without a model, for tests and for asking why.");
    py::class_<sarai::SpecConfig>(m, "SpecConfig",
                                  "Speculation defaults of an Engine (n-gram drafts; see Engine.set_speculation)")
        .def(py::init<>())
        .def_readwrite("n_max", &sarai::SpecConfig::n_max, "most draft tokens per step (0: off)")
        .def_readwrite("n_min", &sarai::SpecConfig::n_min, "drafted whenever proposed, whatever the costs (n_min = n_max: every proposal whole)")
        .def_readwrite("ngram_n", &sarai::SpecConfig::ngram_n, "n-gram size looked up in the sequence's context");

    py::class_<Engine>(m, "Engine",
                       "Continuous batching of n_seq sequences over one llama_context. One thread drives it "
                       "(step, release, provide_token, sample_with, logits, clear); submit() and cancel() may "
                       "come from any thread (they queue or flag under the engine's lock).")
        .def(py::init([](std::shared_ptr<sarai::Model> model, const sarai::ContextParams &p) {
                 py::gil_scoped_release release;
                 return std::make_unique<Engine>(std::move(model), p);
             }),
             py::arg("model"), py::arg("params"))
        .def_property("step_budget_ms", &Engine::step_budget_ms, &Engine::set_step_budget_ms,
                      "Target step time (ms) while sequences generate; 0: off (prompts take n_batch)")
        .def("prompt_budget", &Engine::prompt_budget, py::arg("n_gen"),
             "Prompt tokens a step beside n_gen generating rows may take under the budget now")
        .def("set_speculation", &Engine::set_speculation, py::arg("config"),
             "Speculation defaults for requests that set no draft_max / draft_min of their own")
        .def_property_readonly("speculation", &Engine::speculation)
        .def_property_readonly("n_seq", &Engine::n_seq)
        .def_property_readonly("n_ctx", &Engine::n_ctx)
        .def_property_readonly("n_ctx_seq", &Engine::n_ctx_seq)
        .def_property_readonly("n_batch", &Engine::n_batch)
        .def(
            "submit",
            [](Engine &e, std::vector<llama_token> prompt, const sarai::SamplerParams &params, int32_t max_tokens,
               bool ignore_eos, int32_t n_probs, bool external_sampling, std::vector<llama_token> preserved_tokens,
               int32_t draft_max, int32_t draft_min, std::vector<sarai::MediaSpan> media) {
                sarai::Request r;
                r.prompt = std::move(prompt);
                r.sampling = params;
                r.max_tokens = max_tokens;
                r.ignore_eos = ignore_eos;
                r.n_probs = n_probs;
                r.external_sampling = external_sampling;
                r.preserved_tokens = std::move(preserved_tokens);
                r.draft_max = draft_max;
                r.draft_min = draft_min;
                r.media = std::move(media);
                py::gil_scoped_release release;  // a grammar is parsed here
                return e.submit(std::move(r));
            },
            py::arg("prompt"), py::arg("params"), py::arg("max_tokens") = -1, py::arg("ignore_eos") = false,
            py::arg("n_probs") = -1, py::arg("external_sampling") = false,
            py::arg("preserved_tokens") = std::vector<llama_token>{}, py::arg("draft_max") = -1,
            py::arg("draft_min") = -1, py::arg("media") = std::vector<sarai::MediaSpan>{})
        .def("step",
             [](Engine &e) {
                 std::vector<Event> events;
                 {
                     py::gil_scoped_release release;  // the whole step: decode and sampling
                     events = e.step();
                 }
                 return to_list(std::move(events));
             })
        .def("cancel", &Engine::cancel, py::arg("id"), py::call_guard<py::gil_scoped_release>())
        .def("release", &Engine::release, py::arg("id"))
        .def("logits",
             [](const Engine &e, int64_t id) {
                 const auto &l = e.logits(id);
                 py::array_t<float> out((py::ssize_t)l.size());
                 std::memcpy(out.mutable_data(), l.data(), sizeof(float) * l.size());
                 return out;
             },
             py::arg("id"))
        .def("provide_token", [](Engine &e, int64_t id, llama_token t) { return to_list(e.provide_token(id, t)); },
             py::arg("id"), py::arg("token"))
        .def("sample_with",
             [](Engine &e, int64_t id, FloatArray logits) {
                 return to_list(e.sample_with(id, logits.data(), (size_t)logits.size()));
             },
             py::arg("id"), py::arg("logits"))
        .def("idle", &Engine::idle, py::call_guard<py::gil_scoped_release>())
        .def("n_active", &Engine::n_active, py::call_guard<py::gil_scoped_release>())
        .def("n_queued", &Engine::n_queued, py::call_guard<py::gil_scoped_release>())
        .def("kv_used", &Engine::kv_used, py::call_guard<py::gil_scoped_release>())
        .def("stats",
             [](const Engine &e) {
                 sarai::EngineStats s;
                 {
                     // Another thread may call this while step() holds the engine's lock.
                     py::gil_scoped_release release;
                     s = e.stats();
                 }
                 return stats_dict(s);
             })
        .def("reset_stats", &Engine::reset_stats)
        .def("perf", [](const Engine &e) { return perf_dict(e.perf()); })
        .def("perf_reset", &Engine::perf_reset)
        .def("set_threads", &Engine::set_threads, py::arg("n_threads"), py::arg("n_threads_batch"))
        .def("clear", &Engine::clear)
        .def_property("state_cache", &Engine::state_cache, &Engine::set_state_cache,
                      "The StateCache sequences are saved to when another request takes them, and restored "
                      "from (None: off)")
        .def("keep_idle_states", &Engine::keep_idle_states, py::call_guard<py::gil_scoped_release>(),
             "Save every idle sequence's state to the state cache (a server's shutdown, for its disk tier)")
        .def("cached", &Engine::cached, py::arg("seq") = 0)
        .def("eval", &Engine::eval, py::arg("seq"), py::arg("tokens"), py::call_guard<py::gil_scoped_release>())
        .def("seq_state", [](const Engine &e, int32_t seq) { return py::bytes(e.seq_state(seq)); }, py::arg("seq") = 0)
        .def("seq_serves_from", &Engine::seq_serves_from, py::arg("seq") = 0,
             "The shortest prefix of the sequence's tokens its state can serve (0: none)")
        .def("set_seq_state",
             [](Engine &e, int32_t seq, py::bytes data, const std::vector<llama_token> &tokens) {
                 e.set_seq_state(seq, std::string(data), tokens);
             },
             py::arg("seq"), py::arg("data"), py::arg("tokens"));
}

}  // namespace sarai_bind
