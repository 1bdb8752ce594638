// Binding of sarai::Vision (vision.h) and the media spans it gives the engine.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "bind.h"
#include "vision.h"

namespace sarai_bind {

void bind_vision(py::module_ &m) {
    using sarai::MediaSpan;
    using sarai::Vision;

    py::class_<MediaSpan>(m, "MediaSpan",
                          "One image of a prompt, encoded (made by Vision.tokenize; passed to Engine.submit)")
        .def_readonly("start", &MediaSpan::start, "index in the prompt's tokens of its first position")
        .def_readonly("n_tokens", &MediaSpan::n_tokens, "positions it takes")
        .def_readonly("non_causal", &MediaSpan::non_causal, "read whole in one batch (its positions attend to each other)")
        .def_property_readonly("id", [](const MediaSpan &s) { return utf8_str(s.id); }, "hex SHA-256 of the image's bytes")
        .def("__repr__", [](const MediaSpan &s) {
            return "<MediaSpan start=" + std::to_string(s.start) + " n_tokens=" + std::to_string(s.n_tokens) + ">";
        });

    py::class_<sarai::MediaPrompt>(m, "MediaPrompt", "A prompt's tokens with its images (Vision.tokenize)")
        .def_readonly("tokens", &sarai::MediaPrompt::tokens, "text tokens; negative placeholders at image positions")
        .def_readonly("media", &sarai::MediaPrompt::media, "the images, in prompt order");

    py::class_<Vision, std::shared_ptr<Vision>>(
        m, "Vision",
        "A projector (mmproj GGUF, llama.cpp's mtmd) beside a text model: prompts with media markers and "
        "image bytes -> tokens and encoded images. tokenize() may run on any thread (encodes are serialised).")
        .def(py::init([](std::shared_ptr<sarai::Model> model, const std::string &path, int32_t n_threads,
                         bool warmup) {
                 py::gil_scoped_release release;
                 return std::make_shared<Vision>(std::move(model), path, n_threads, warmup);
             }),
             py::arg("model"), py::arg("path"), py::arg("n_threads"), py::arg("warmup") = false,
             "warmup: build the encoder's graph for the largest image now (its shape asserts run; "
             "the loading probe asks for it)")
        .def_property_readonly("takes_images", &Vision::takes_images)
        .def_property_readonly("takes_audio", &Vision::takes_audio)
        .def_property_readonly("marker", &Vision::marker, "the text that stands for one image in a prompt")
        .def_property_readonly("n_embd", &Vision::n_embd)
        .def(
            "tokenize",
            [](Vision &v, const std::string &text, const std::vector<py::bytes> &images, bool add_special,
               bool parse_special) {
                std::vector<std::string> bytes;
                bytes.reserve(images.size());
                for (const auto &b : images) bytes.emplace_back(b);
                py::gil_scoped_release release;  // decoding and encoding take long
                return v.tokenize(text, bytes, add_special, parse_special);
            },
            py::arg("text"), py::arg("images"), py::arg("add_special") = false, py::arg("parse_special") = true,
            "Tokens and encoded images of `text`, which holds one marker per image (their encoded bytes). "
            "ValueError for bytes that are not an image, an image over 64 megapixels, a marker count that "
            "differs from the images', or an image the projector cannot take.")
        .def("stats", [](const Vision &v) {
            sarai::VisionStats s;
            {
                py::gil_scoped_release release;
                s = v.stats();
            }
            py::dict d;
            d["n_encoded"] = s.n_encoded;
            d["n_reused"] = s.n_reused;
            d["t_encode_ms"] = s.t_encode_ms;
            d["last_encode_ms"] = s.last_encode_ms;
            return d;
        }, "Images encoded, images whose encoding came from the cache, encoder time (ms) in all and for the last");
}

}  // namespace sarai_bind
