// sarai::Vision: a projector (an mmproj GGUF, llama.cpp's mtmd) loaded beside a
// text model. It turns a prompt with media markers and the images' bytes into the
// engine's prompt: text tokens, and for each image a run of placeholder positions
// with the image's embeddings (media.h). Images are decoded by mtmd's own decoder
// (stb_image); no Python imaging library is involved.
//
// Encoding runs here, on the caller's thread (submit's), not in Engine::step: a
// vision encoder's graph cannot be split, and while it runs the engine keeps
// stepping every other sequence. Only the embeddings' decode into the text
// model's KV cache is the engine's, under its step budget (engine_media.cpp).
//
// Thread rule: tokenize() may be called from any thread; encodes are serialised
// (mtmd's encoder has one set of buffers), decoding and tokenizing are not.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "media.h"
#include "model.h"

struct mtmd_context;

namespace sarai {

struct MediaPrompt {
    std::vector<llama_token> tokens;  // text tokens; placeholders at the images' positions
    std::vector<MediaSpan> media;     // in prompt order
};

struct VisionStats {
    int64_t n_encoded = 0;     // images run through the encoder
    int64_t n_reused = 0;      // images whose embeddings came from the cache of encodings
    double t_encode_ms = 0.0;  // wall time inside the encoder, all images
    double last_encode_ms = 0.0;
};

class Vision {
  public:
    // Loads the projector for `model` (InvalidArgument when the file is not a projector
    // mtmd can load for this model, with mtmd's reason). n_threads: the encoder's threads.
    // warmup: build the encoder's graph for the projector's largest image and reserve its
    // buffers now (every op's shape asserts run on the file's shapes, nothing is computed);
    // the loading probe does this, the real load leaves it to the first image.
    Vision(std::shared_ptr<Model> model, const std::string &mmproj_path, int32_t n_threads, bool warmup = false);
    ~Vision();
    Vision(const Vision &) = delete;
    Vision &operator=(const Vision &) = delete;

    bool takes_images() const;
    bool takes_audio() const;
    // The text that stands for one image in a prompt ("<__media__>").
    std::string marker() const;
    int32_t n_embd() const { return n_embd_; }

    // `text` holds one marker per entry of `images` (their encoded bytes: JPEG, PNG,
    // BMP, GIF, ...). InvalidArgument for bytes that are not an image stb_image reads,
    // an image over the size limit, a marker count that differs from the images', or
    // an image the projector cannot take.
    MediaPrompt tokenize(const std::string &text, const std::vector<std::string> &images, bool add_special,
                         bool parse_special);
    VisionStats stats() const;

  private:
    std::shared_ptr<const std::vector<float>> encoded(const void *chunk, const std::string &id, size_t n_tokens);

    std::shared_ptr<Model> model_;
    mtmd_context *ctx_ = nullptr;
    int32_t n_embd_ = 0;

    mutable std::mutex mu_;  // the encoder, the cache of encodings and stats_
    // The most recent encodings by image hash, up to kEncodingCacheBytes: a later chat turn
    // about the same image skips its encoder run (the state cache skips its decode).
    std::list<std::pair<std::string, std::shared_ptr<const std::vector<float>>>> lru_;
    std::unordered_map<std::string, decltype(lru_)::iterator> by_id_;
    size_t lru_bytes_ = 0;
    VisionStats stats_;
};

}  // namespace sarai
