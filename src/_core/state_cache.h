// sarai::StateCache: sequence KV states kept in host RAM (and optionally on
// disk) after their sequence was taken by another request, keyed by the
// tokens they hold, so that a later request sharing a prefix restores it
// instead of prefilling it again. The engine saves a sequence's state when it
// is about to be reused (engine_state.cpp) and restores the longest cached
// prefix into the sequence a new request gets.
//
// Plain bytes and tokens: the store knows nothing of llama.cpp. An entry is
// the output of llama_state_seq_get_data_ext for one sequence, its tokens
// (positions 0..n-1) and the shortest prefix it can serve (`min_prefix`): a
// sliding-window cache keeps only a window of old positions, so its state
// serves prefixes whose window it still holds (see Engine::stash).
//
// Budget: LRU by last use, up to `ram_bytes` of state data (0: nothing is
// kept in RAM; with a disk tier, states live on disk only, as
// LlamaDiskCache keeps them). The disk tier (set_disk) writes every entry through to one file,
// atomically (a temporary file renamed into place), with a format version,
// the model's identity and a checksum; files that are damaged, of another
// format or of another model are ignored with a warning (take_warnings) and
// never loaded. The disk tier has its own byte budget (LRU by last use).
//
// Thread rule: every method locks; the engine calls it from its driving
// thread, stats() and take_warnings() come from any thread.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "llama.h"

namespace sarai {

struct CachedState {
    std::vector<llama_token> tokens;  // the sequence's tokens, positions 0..n-1
    std::string data;                 // llama_state_seq_get_data_ext's bytes
    uint32_t min_prefix = 1;          // the shortest prefix of `tokens` this state can serve
};

struct StateCacheStats {
    int64_t hits = 0;             // requests that restored a cached state
    int64_t misses = 0;           // requests that found none worth restoring
    int64_t restored_tokens = 0;  // prompt tokens restored instead of prefilled
    int64_t saves = 0;            // states stored
    int64_t evictions = 0;        // states dropped to stay within the RAM budget
    int64_t entries = 0, bytes = 0;            // in RAM now
    int64_t budget_bytes = 0;                  // the RAM budget
    int64_t disk_entries = 0, disk_bytes = 0;  // on disk now (0 without a disk tier)
    int64_t disk_budget_bytes = 0;
    int64_t disk_loads = 0;       // hits served from disk
    int64_t disk_rejected = 0;    // files ignored: damaged, foreign format or model
};

class StateCache {
  public:
    // `identity` names the model and cache layout the states belong to (the
    // disk tier refuses files of another identity). Empty: not bound yet (a
    // LlamaRAMCache/LlamaDiskCache made before any model); bind() sets it.
    StateCache(uint64_t ram_bytes, std::string identity);

    void set_budget(uint64_t ram_bytes);  // evicts down to it at once
    uint64_t budget() const;
    std::string identity() const;
    // Binds an unbound cache to `identity` (and indexes its disk files, which
    // set_disk leaves for then); a no-op for the same identity; InvalidArgument
    // for another (its states would not fit this model).
    void bind(const std::string &identity);
    // Whether it keeps anything (a RAM budget or a disk tier), and whether a
    // state of `bytes` fits (in RAM, or on disk).
    bool enabled() const;
    bool accepts(uint64_t bytes) const;

    // Disk tier in `dir` (created if missing) holding up to `disk_bytes`; the
    // files already there are indexed (headers only; data is checked on load).
    // An empty dir turns the tier off.
    void set_disk(const std::string &dir, uint64_t disk_bytes);
    std::string disk_dir() const;
    uint64_t disk_budget() const;

    struct Match {
        size_t n = 0;                             // prompt tokens it gives (0: none)
        std::shared_ptr<const CachedState> state;
    };
    // The entry giving the longest prefix of `prompt`, at most `limit` tokens
    // and at least `at_least + 1` (a match that is no better than what the
    // caller has is no match). A disk entry is loaded and checked here.
    Match find(const std::vector<llama_token> &prompt, size_t limit, size_t at_least);
    // What find(prompt, limit, 0) would give (prefix length, the entry's tokens;
    // 0 and none when nothing), without using, loading or counting anything.
    std::pair<size_t, std::vector<llama_token>> peek(const std::vector<llama_token> &prompt, size_t limit) const;
    // True when a stored entry already serves every prefix a state of `tokens`
    // with `min_prefix` would (saving it again would add nothing).
    bool covers(const std::vector<llama_token> &tokens, uint32_t min_prefix) const;
    // Stores a state; entries it covers are dropped. False when it fits
    // neither the RAM budget nor the disk tier's.
    bool put(CachedState state);
    void clear();  // RAM only: the disk tier's files stay

    void count_hit(size_t n_tokens);
    void count_miss();
    StateCacheStats stats() const;
    std::vector<std::string> take_warnings();

  private:
    struct Entry {
        std::shared_ptr<const CachedState> state;
    };
    struct DiskEntry {
        std::vector<llama_token> tokens;
        uint32_t min_prefix = 1;
        std::string path;
        uint64_t bytes = 0;
        uint64_t last_used = 0;
    };

    bool accepts_locked(uint64_t bytes) const;
    void disk_index();
    void evict_ram();
    void insert_ram(std::shared_ptr<const CachedState> s);
    void disk_write(const CachedState &s);
    void disk_evict();
    void disk_index_file(const std::string &path);
    std::shared_ptr<const CachedState> disk_load(const DiskEntry &e);
    void warn(const std::string &msg);

    std::string identity_;
    uint64_t ram_budget_ = 0;
    uint64_t clock_ = 0;          // the disk tier's use order
    std::list<Entry> entries_;  // most recently used first
    uint64_t ram_bytes_ = 0;

    std::string dir_;
    uint64_t disk_budget_ = 0;
    std::vector<DiskEntry> disk_;
    uint64_t disk_bytes_ = 0;

    mutable std::mutex mu_;  // every public method holds it (stats come from other threads)
    StateCacheStats stats_;
    std::vector<std::string> warnings_;
};

}  // namespace sarai
