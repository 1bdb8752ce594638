#include "vision.h"

#include <chrono>
#include <cstring>
#include <mutex>

#include "errors.h"
#include "log.h"
#include "mtmd-helper.h"
#include "mtmd.h"
#include "stb/stb_image.h"

namespace sarai {

namespace {

// The largest image accepted, in pixels: 64 MP (a 48 MP phone photo fits; a 4K screen
// is 8.3 MP). stb_image allocates width x height x 3 bytes before it reads a pixel, so a
// few bytes of header claiming 60000 x 60000 would otherwise allocate 10 GiB.
constexpr uint64_t kMaxPixels = 64ull * 1000 * 1000;
// The cache of encodings: a few screenshots of a conversation (a 256-token gemma3 image
// is 2.6 MB, a 1024-token one at 2048 dims 8 MB) without growing the process much.
constexpr size_t kEncodingCacheBytes = 128u << 20;

void route_mtmd_logs() {
    // mtmd and its helper log through their own callbacks (stderr by default): they go
    // through the sink llama.cpp's logs use, so an mtmd error is the reason of our error.
    static std::once_flag once;
    std::call_once(once, [] {
        ggml_log_callback cb = nullptr;
        void *ud = nullptr;
        ggml_log_get(&cb, &ud);
        mtmd_log_set(cb, ud);
        mtmd_helper_log_set(cb, ud);
    });
}

struct Chunks {
    mtmd_input_chunks *p = mtmd_input_chunks_init();
    ~Chunks() { mtmd_input_chunks_free(p); }
};

struct Bitmaps {
    std::vector<mtmd_bitmap *> p;
    ~Bitmaps() {
        for (auto *b : p) mtmd_bitmap_free(b);
    }
};

std::string nth(size_t i) { return "image " + std::to_string(i + 1); }

}  // namespace

llama_token media_placeholder(const std::string &id, size_t i) {
    // FNV-1a over the hash and the index, folded into [1, 2^31 - 1], negated.
    uint64_t h = 1469598103934665603ull;
    auto mix = [&](unsigned char c) { h = (h ^ c) * 1099511628211ull; };
    for (unsigned char c : id) mix(c);
    for (int b = 0; b < 8; ++b) mix((unsigned char)(i >> (8 * b)));
    return -(llama_token)(1 + (h % 0x7FFFFFFEull));
}

Vision::Vision(std::shared_ptr<Model> model, const std::string &mmproj_path, int32_t n_threads, bool warmup)
    : model_(std::move(model)) {
    if (n_threads < 1) throw InvalidArgument("n_threads must be >= 1");
    route_mtmd_logs();
    mtmd_context_params p = mtmd_context_params_default();
    p.use_gpu = false;
    p.print_timings = false;
    p.n_threads = n_threads;
    // mtmd's warm-up builds the graph for the largest image and reserves its compute
    // buffers: memory that a server which never sees an image does not need, so the
    // real load leaves it to the first image and only the loading probe asks for it.
    p.warmup = warmup;
    clear_last_error();
    ctx_ = mtmd_init_from_file(mmproj_path.c_str(), model_->get(), p);
    if (!ctx_) throw InvalidArgument(with_reason("cannot load the projector " + mmproj_path));
    if (!mtmd_support_vision(ctx_)) {
        mtmd_free(ctx_);
        ctx_ = nullptr;
        throw InvalidArgument("the projector " + mmproj_path + " takes no images (an audio-only projector)");
    }
    if (mtmd_decode_use_mrope(ctx_)) {
        // M-RoPE (Qwen2-VL and its kin) gives each image embedding 2-D positions, four
        // per row, which the engine's one-position batches do not carry yet.
        mtmd_free(ctx_);
        ctx_ = nullptr;
        throw InvalidArgument("the projector " + mmproj_path +
                              " uses M-RoPE positions (Qwen2-VL family), which sarai-llama does not decode yet");
    }
    n_embd_ = llama_model_n_embd_inp(model_->get());
}

Vision::~Vision() {
    if (ctx_) mtmd_free(ctx_);
}

bool Vision::takes_images() const { return mtmd_support_vision(ctx_); }
bool Vision::takes_audio() const { return mtmd_support_audio(ctx_); }
std::string Vision::marker() const { return mtmd_get_marker(ctx_); }

VisionStats Vision::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
}

std::shared_ptr<const std::vector<float>> Vision::encoded(const void *chunk_p, const std::string &id, size_t n_tokens) {
    const auto *chunk = static_cast<const mtmd_input_chunk *>(chunk_p);
    std::lock_guard<std::mutex> lock(mu_);
    const bool cacheable = !id.empty();  // mtmd names every decoded image by its bytes' SHA-256
    if (auto it = by_id_.find(id); cacheable && it != by_id_.end() && it->second->second->size() == n_tokens * (size_t)n_embd_) {
        lru_.splice(lru_.begin(), lru_, it->second);
        stats_.n_reused++;
        return it->second->second;
    }
    const auto t0 = std::chrono::steady_clock::now();
    clear_last_error();
    if (mtmd_encode_chunk(ctx_, chunk) != 0) throw InvalidArgument(with_reason("the projector could not encode the image"));
    const float *out = mtmd_get_output_embd(ctx_);
    if (!out) throw std::runtime_error("the projector gave no embeddings");
    auto embd = std::make_shared<const std::vector<float>>(out, out + n_tokens * (size_t)n_embd_);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    stats_.n_encoded++;
    stats_.t_encode_ms += ms;
    stats_.last_encode_ms = ms;
    const size_t bytes = embd->size() * sizeof(float);
    if (cacheable && bytes <= kEncodingCacheBytes) {
        if (auto it = by_id_.find(id); it != by_id_.end()) {
            lru_bytes_ -= it->second->second->size() * sizeof(float);
            lru_.erase(it->second);
            by_id_.erase(it);
        }
        lru_.emplace_front(id, embd);
        by_id_[id] = lru_.begin();
        lru_bytes_ += bytes;
        while (lru_bytes_ > kEncodingCacheBytes) {
            lru_bytes_ -= lru_.back().second->size() * sizeof(float);
            by_id_.erase(lru_.back().first);
            lru_.pop_back();
        }
    }
    return embd;
}

MediaPrompt Vision::tokenize(const std::string &text, const std::vector<std::string> &images, bool add_special,
                             bool parse_special) {
    size_t n_markers = 0;
    const std::string m = marker();
    for (size_t at = text.find(m); at != std::string::npos; at = text.find(m, at + m.size())) ++n_markers;
    if (n_markers != images.size())
        throw InvalidArgument("the prompt has " + std::to_string(n_markers) + " media markers (" + m + ") for " +
                              std::to_string(images.size()) + " images: one marker per image");
    Bitmaps bitmaps;
    for (size_t i = 0; i < images.size(); ++i) {
        const auto *buf = reinterpret_cast<const unsigned char *>(images[i].data());
        if (images[i].empty()) throw InvalidArgument(nth(i) + " is empty");
        if (images[i].size() > (size_t)INT32_MAX) throw InvalidArgument(nth(i) + " is over 2 GiB");
        int w = 0, h = 0, c = 0;
        if (!stbi_info_from_memory(buf, (int)images[i].size(), &w, &h, &c))
            throw InvalidArgument(nth(i) + " is not an image this build can decode (JPEG, PNG, BMP, GIF, TGA, PSD, "
                                  "HDR, PIC or PNM): " + stbi_failure_reason());
        if (w < 1 || h < 1 || (uint64_t)w * (uint64_t)h > kMaxPixels)
            throw InvalidArgument(nth(i) + " is " + std::to_string(w) + "x" + std::to_string(h) +
                                  " pixels; at most " + std::to_string(kMaxPixels / 1000000) + " megapixels are taken");
        clear_last_error();
        mtmd_helper_bitmap_wrapper bm =
            mtmd_helper_bitmap_init_from_buf(ctx_, buf, images[i].size(), false, mtmd_helper_init_opt_default());
        if (!bm.bitmap) {
            const std::string why = stbi_failure_reason() ? stbi_failure_reason() : "";
            throw InvalidArgument(with_reason(nth(i) + " could not be decoded" + (why.empty() ? "" : " (" + why + ")")));
        }
        bitmaps.p.push_back(bm.bitmap);
    }
    Chunks chunks;
    mtmd_input_text in{text.c_str(), text.size(), add_special, parse_special};
    clear_last_error();
    const int32_t rc = mtmd_tokenize(ctx_, chunks.p, &in, const_cast<const mtmd_bitmap **>(bitmaps.p.data()),
                                     bitmaps.p.size());
    if (rc != 0) throw InvalidArgument(with_reason("the projector cannot take the image"));
    MediaPrompt out;
    size_t n_image = 0;
    for (size_t k = 0; k < mtmd_input_chunks_size(chunks.p); ++k) {
        const mtmd_input_chunk *chunk = mtmd_input_chunks_get(chunks.p, k);
        const auto type = mtmd_input_chunk_get_type(chunk);
        if (type == MTMD_INPUT_CHUNK_TYPE_TEXT) {
            size_t n = 0;
            const llama_token *t = mtmd_input_chunk_get_tokens_text(chunk, &n);
            out.tokens.insert(out.tokens.end(), t, t + n);
            continue;
        }
        if (type != MTMD_INPUT_CHUNK_TYPE_IMAGE) throw InvalidArgument(nth(n_image) + " is not an image");
        const size_t n_tokens = mtmd_input_chunk_get_n_tokens(chunk);
        if (n_tokens == 0 || (size_t)mtmd_input_chunk_get_n_pos(chunk) != n_tokens)
            throw InvalidArgument(nth(n_image) + ": the projector gives positions the engine cannot decode");
        MediaSpan span;
        span.start = out.tokens.size();
        span.n_tokens = n_tokens;
        span.non_causal = mtmd_decode_use_non_causal(ctx_, chunk);
        const char *id = mtmd_input_chunk_get_id(chunk);
        span.id = id ? id : "";
        span.embd = encoded(chunk, span.id, n_tokens);
        for (size_t i = 0; i < n_tokens; ++i) out.tokens.push_back(media_placeholder(span.id, i));
        out.media.push_back(std::move(span));
        ++n_image;
    }
    return out;
}

}  // namespace sarai
