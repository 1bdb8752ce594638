#include "gguf_check.h"

#include <memory>
#include <string_view>
#include <unordered_set>

#include "errors.h"
#include "gguf.h"
#include "log.h"

namespace sarai {
namespace {

using GgufPtr = std::unique_ptr<gguf_context, decltype(&gguf_free)>;

GgufPtr open_gguf(const std::string &path) {
    gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
    clear_last_error();
    gguf_context *ctx = gguf_init_from_file(path.c_str(), params);
    if (!ctx) throw InvalidArgument(with_reason("not a readable GGUF file: " + path));
    return GgufPtr(ctx, gguf_free);
}

}  // namespace

GgufInfo inspect_gguf(const std::string &path) {
    GgufPtr guard = open_gguf(path);
    gguf_context *ctx = guard.get();
    GgufInfo info;
    const int64_t n = gguf_get_n_kv(ctx);
    info.meta.reserve((size_t)n);
    for (int64_t i = 0; i < n; ++i) {
        GgufValue v;
        switch (gguf_get_kv_type(ctx, i)) {
            case GGUF_TYPE_STRING: v = GgufString{gguf_get_val_str(ctx, i)}; break;
            case GGUF_TYPE_UINT8: v = (int64_t)gguf_get_val_u8(ctx, i); break;
            case GGUF_TYPE_INT8: v = (int64_t)gguf_get_val_i8(ctx, i); break;
            case GGUF_TYPE_UINT16: v = (int64_t)gguf_get_val_u16(ctx, i); break;
            case GGUF_TYPE_INT16: v = (int64_t)gguf_get_val_i16(ctx, i); break;
            case GGUF_TYPE_UINT32: v = (int64_t)gguf_get_val_u32(ctx, i); break;
            case GGUF_TYPE_INT32: v = (int64_t)gguf_get_val_i32(ctx, i); break;
            case GGUF_TYPE_UINT64: v = gguf_get_val_u64(ctx, i); break;
            case GGUF_TYPE_INT64: v = gguf_get_val_i64(ctx, i); break;
            case GGUF_TYPE_FLOAT32: v = (double)gguf_get_val_f32(ctx, i); break;
            case GGUF_TYPE_FLOAT64: v = gguf_get_val_f64(ctx, i); break;
            case GGUF_TYPE_BOOL: v = gguf_get_val_bool(ctx, i); break;
            case GGUF_TYPE_ARRAY: break;  // arrays (vocab) are not needed here
            default: continue;            // unknown types are left out, as before
        }
        info.meta.emplace_back(gguf_get_key(ctx, i), std::move(v));
    }
    info.n_tensors = gguf_get_n_tensors(ctx);
    return info;
}

bool gguf_has_tensor(const std::string &path, const std::string &name) {
    GgufPtr guard = open_gguf(path);
    return gguf_find_tensor(guard.get(), name.c_str()) >= 0;
}

std::vector<GgufTensor> gguf_tensors(const std::string &path) {
    GgufPtr guard = open_gguf(path);
    gguf_context *ctx = guard.get();
    std::vector<GgufTensor> out;
    for (int64_t i = 0; i < gguf_get_n_tensors(ctx); ++i)
        out.push_back({gguf_get_tensor_name(ctx, i), ggml_type_name(gguf_get_tensor_type(ctx, i)),
                       (uint64_t)gguf_get_tensor_size(ctx, i)});
    return out;
}

void validate_gguf(const std::string &path, bool vocab_only) {
    GgufPtr guard = open_gguf(path);
    gguf_context *ctx = guard.get();
    const int64_t arch_key = gguf_find_key(ctx, "general.architecture");
    if (arch_key < 0 || gguf_get_kv_type(ctx, arch_key) != GGUF_TYPE_STRING)
        throw InvalidArgument(path + ": GGUF has no general.architecture");
    const std::string arch = gguf_get_val_str(ctx, arch_key);
    if (!vocab_only) {
        const int64_t blocks_key = gguf_find_key(ctx, (arch + ".block_count").c_str());
        int64_t blocks = -1;
        if (blocks_key >= 0) {
            switch (gguf_get_kv_type(ctx, blocks_key)) {
                case GGUF_TYPE_UINT32: blocks = gguf_get_val_u32(ctx, blocks_key); break;
                case GGUF_TYPE_INT32: blocks = gguf_get_val_i32(ctx, blocks_key); break;
                case GGUF_TYPE_UINT64: blocks = (int64_t)gguf_get_val_u64(ctx, blocks_key); break;
                default: break;
            }
        }
        if (blocks <= 0)
            throw InvalidArgument(path + ": GGUF says " + arch + ".block_count=" +
                                  (blocks_key < 0 ? std::string("(missing)") : std::to_string(blocks)) +
                                  "; a model needs at least one layer");
        if (gguf_get_n_tensors(ctx) <= 0) throw InvalidArgument(path + ": GGUF has no tensors");
    }
    const int64_t tok_key = gguf_find_key(ctx, "tokenizer.ggml.tokens");
    if (tok_key >= 0 && gguf_get_kv_type(ctx, tok_key) == GGUF_TYPE_ARRAY &&
        gguf_get_arr_type(ctx, tok_key) == GGUF_TYPE_STRING) {
        const size_t n_tok = gguf_get_arr_n(ctx, tok_key);
        std::unordered_set<std::string_view> seen;
        seen.reserve(n_tok);
        for (size_t j = 0; j < n_tok; ++j) {
            if (!seen.insert(gguf_get_arr_str(ctx, tok_key, j)).second)
                throw InvalidArgument(path + ": the vocabulary has a duplicate token " +
                                      std::string(gguf_get_arr_str(ctx, tok_key, j)));
        }
    }
}

}  // namespace sarai
