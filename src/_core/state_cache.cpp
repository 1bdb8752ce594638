#include "state_cache.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "errors.h"

namespace sarai {

namespace fs = std::filesystem;

namespace {

// The disk format (all integers little-endian as the host writes them; a file
// from a host of the other byte order fails the magic or the checksum):
//   magic "SARAIKV\n", u32 version, u32 identity length, identity bytes,
//   u32 min_prefix, u32 n_tokens, n_tokens * i32 tokens, u64 data length, data,
//   u64 FNV-1a checksum of every byte before it.
constexpr char kMagic[8] = {'S', 'A', 'R', 'A', 'I', 'K', 'V', '\n'};
constexpr uint32_t kVersion = 1;
constexpr const char *kSuffix = ".kvstate";

size_t common_prefix(const std::vector<llama_token> &a, const std::vector<llama_token> &b) {
    const size_t n = std::min(a.size(), b.size());
    size_t i = 0;
    while (i < n && a[i] == b[i]) ++i;
    return i;
}

bool is_prefix(const std::vector<llama_token> &a, const std::vector<llama_token> &b) {
    return a.size() <= b.size() && std::equal(a.begin(), a.end(), b.begin());
}

struct Fnv {
    uint64_t h = 1469598103934665603ull;
    void add(const void *p, size_t n) {
        const auto *b = static_cast<const unsigned char *>(p);
        for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
    }
};

// The best prefix `tokens` (serving [min_prefix, size]) gives `prompt`, capped at `limit`; 0: none.
size_t usable(const std::vector<llama_token> &tokens, uint32_t min_prefix, const std::vector<llama_token> &prompt,
              size_t limit) {
    const size_t c = std::min(common_prefix(tokens, prompt), limit);
    return c >= std::max<size_t>(1, min_prefix) ? c : 0;
}

std::string file_name(const std::vector<llama_token> &tokens) {
    Fnv f;
    f.add(tokens.data(), tokens.size() * sizeof(llama_token));
    char buf[40];
    std::snprintf(buf, sizeof buf, "%016llx-%u", (unsigned long long)f.h, (unsigned)tokens.size());
    return std::string(buf) + kSuffix;
}

// Reads a file's header; with `data` also the state and the checksum. Throws
// std::runtime_error saying what is wrong with it.
struct Header {
    std::string identity;
    uint32_t min_prefix = 1;
    std::vector<llama_token> tokens;
    uint64_t data_len = 0;
};

Header read_file(const std::string &path, std::string *data) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open it");
    Fnv f;
    auto get = [&](void *p, size_t n) {
        if (!in.read(static_cast<char *>(p), (std::streamsize)n)) throw std::runtime_error("it is truncated");
        f.add(p, n);
    };
    char magic[8];
    get(magic, sizeof magic);
    if (std::memcmp(magic, kMagic, sizeof magic) != 0) throw std::runtime_error("it is not a sarai-llama state file");
    uint32_t version = 0, id_len = 0, n_tokens = 0;
    get(&version, 4);
    if (version != kVersion)
        throw std::runtime_error("it has format version " + std::to_string(version) + ", this build reads " +
                                 std::to_string(kVersion));
    get(&id_len, 4);
    if (id_len > 1 << 16) throw std::runtime_error("its header is damaged");
    Header h;
    h.identity.resize(id_len);
    get(h.identity.data(), id_len);
    get(&h.min_prefix, 4);
    get(&n_tokens, 4);
    if (n_tokens == 0 || n_tokens > (1u << 24)) throw std::runtime_error("its header is damaged");
    h.tokens.resize(n_tokens);
    get(h.tokens.data(), (size_t)n_tokens * sizeof(llama_token));
    get(&h.data_len, 8);
    if (!data) return h;
    if (h.data_len > (uint64_t)1 << 40) throw std::runtime_error("its header is damaged");
    data->resize(h.data_len);
    get(data->data(), h.data_len);
    uint64_t sum = 0;
    const uint64_t expect = f.h;
    if (!in.read(reinterpret_cast<char *>(&sum), 8)) throw std::runtime_error("it is truncated");
    if (sum != expect) throw std::runtime_error("its checksum does not match (damaged)");
    if (in.peek() != EOF) throw std::runtime_error("it has bytes after its checksum (damaged)");
    return h;
}

}  // namespace

StateCache::StateCache(uint64_t ram_bytes, std::string identity) : identity_(std::move(identity)) {
    ram_budget_ = ram_bytes;
    stats_.budget_bytes = (int64_t)ram_bytes;
}

void StateCache::set_budget(uint64_t ram_bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    ram_budget_ = ram_bytes;
    stats_.budget_bytes = (int64_t)ram_bytes;
    evict_ram();
}

uint64_t StateCache::budget() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ram_budget_;
}

std::string StateCache::identity() const {
    std::lock_guard<std::mutex> lock(mu_);
    return identity_;
}

void StateCache::bind(const std::string &identity) {
    std::lock_guard<std::mutex> lock(mu_);
    if (identity == identity_) return;
    if (!identity_.empty())
        throw InvalidArgument("this state cache holds states of " + identity_ + ", not of " + identity);
    identity_ = identity;
    if (!dir_.empty()) disk_index();
}

bool StateCache::enabled() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ram_budget_ > 0 || !dir_.empty();
}

bool StateCache::accepts(uint64_t bytes) const {
    std::lock_guard<std::mutex> lock(mu_);
    return accepts_locked(bytes);
}

bool StateCache::accepts_locked(uint64_t bytes) const {
    return bytes <= ram_budget_ || (!dir_.empty() && bytes <= disk_budget_);
}

std::string StateCache::disk_dir() const {
    std::lock_guard<std::mutex> lock(mu_);
    return dir_;
}

uint64_t StateCache::disk_budget() const {
    std::lock_guard<std::mutex> lock(mu_);
    return disk_budget_;
}

void StateCache::evict_ram() {
    while (ram_bytes_ > ram_budget_ && !entries_.empty()) {
        ram_bytes_ -= entries_.back().state->data.size();
        entries_.pop_back();
        stats_.evictions++;
    }
    stats_.entries = (int64_t)entries_.size();
    stats_.bytes = (int64_t)ram_bytes_;
}

void StateCache::insert_ram(std::shared_ptr<const CachedState> s) {
    // Entries the new one serves entirely go: a state of a prefix of its tokens
    // that serves no shorter prefix than it does.
    for (auto it = entries_.begin(); it != entries_.end();) {
        const CachedState &o = *it->state;
        if (is_prefix(o.tokens, s->tokens) && s->min_prefix <= o.min_prefix) {
            ram_bytes_ -= o.data.size();
            it = entries_.erase(it);
        } else ++it;
    }
    ram_bytes_ += s->data.size();
    entries_.push_front({std::move(s)});
    evict_ram();
}

bool StateCache::covers(const std::vector<llama_token> &tokens, uint32_t min_prefix) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto &e : entries_)
        if (is_prefix(tokens, e.state->tokens) && e.state->min_prefix <= min_prefix) return true;
    for (const auto &e : disk_)
        if (is_prefix(tokens, e.tokens) && e.min_prefix <= min_prefix) return true;
    return false;
}

bool StateCache::put(CachedState state) {
    std::lock_guard<std::mutex> lock(mu_);
    if (state.tokens.empty() || !accepts_locked(state.data.size())) return false;
    auto s = std::make_shared<const CachedState>(std::move(state));
    if (!dir_.empty()) disk_write(*s);
    if (s->data.size() <= ram_budget_) insert_ram(s);
    stats_.saves++;
    return true;
}

std::pair<size_t, std::vector<llama_token>> StateCache::peek(const std::vector<llama_token> &prompt,
                                                             size_t limit) const {
    std::lock_guard<std::mutex> lock(mu_);
    std::pair<size_t, std::vector<llama_token>> best{0, {}};
    for (const auto &e : entries_) {
        const size_t c = usable(e.state->tokens, e.state->min_prefix, prompt, limit);
        if (c > best.first) best = {c, e.state->tokens};
    }
    for (const auto &e : disk_) {
        const size_t c = usable(e.tokens, e.min_prefix, prompt, limit);
        if (c > best.first) best = {c, e.tokens};
    }
    return best;
}

StateCache::Match StateCache::find(const std::vector<llama_token> &prompt, size_t limit, size_t at_least) {
    std::lock_guard<std::mutex> lock(mu_);
    while (true) {
        size_t best_n = at_least;
        auto best_it = entries_.end();
        for (auto it = entries_.begin(); it != entries_.end(); ++it) {
            const size_t c = usable(it->state->tokens, it->state->min_prefix, prompt, limit);
            if (c > best_n) {
                best_n = c;
                best_it = it;
            }
        }
        size_t disk_i = disk_.size();
        for (size_t i = 0; i < disk_.size(); ++i) {
            const size_t c = usable(disk_[i].tokens, disk_[i].min_prefix, prompt, limit);
            if (c > best_n) {
                best_n = c;
                disk_i = i;
            }
        }
        if (disk_i < disk_.size()) {
            auto s = disk_load(disk_[disk_i]);  // a refused file leaves the index: search again
            if (!s) continue;
            stats_.disk_loads++;
            disk_[disk_i].last_used = ++clock_;
            if (s->data.size() <= ram_budget_) insert_ram(s);
            return Match{best_n, std::move(s)};
        }
        if (best_it == entries_.end()) return Match{};
        entries_.splice(entries_.begin(), entries_, best_it);  // most recently used first
        return Match{best_n, entries_.front().state};
    }
}

void StateCache::clear() {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.clear();
    ram_bytes_ = 0;
    evict_ram();
}

void StateCache::count_hit(size_t n_tokens) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.hits++;
    stats_.restored_tokens += (int64_t)n_tokens;
}

void StateCache::count_miss() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.misses++;
}

StateCacheStats StateCache::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
}

std::vector<std::string> StateCache::take_warnings() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    out.swap(warnings_);
    return out;
}

void StateCache::warn(const std::string &msg) {
    constexpr size_t kMaxWarnings = 100;  // nobody reads them: keep the first ones
    if (warnings_.size() < kMaxWarnings) warnings_.push_back(msg);
}

// ------------------------------------------------------------------ disk tier

void StateCache::set_disk(const std::string &dir, uint64_t disk_bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    disk_.clear();
    disk_bytes_ = 0;
    dir_.clear();
    disk_budget_ = disk_bytes;
    stats_.disk_budget_bytes = (int64_t)disk_bytes;
    if (!dir.empty()) {
        std::error_code ec;
        fs::create_directories(dir, ec);
        if (!fs::is_directory(dir, ec))
            throw InvalidArgument("the state cache directory " + dir + " cannot be created" +
                                  (ec ? ": " + ec.message() : std::string()));
        if (access(dir.c_str(), W_OK) != 0)
            throw InvalidArgument("the state cache directory " + dir + " is not writable");
        dir_ = dir;
        if (!identity_.empty()) disk_index();  // unbound: bind() indexes them
    }
    stats_.disk_entries = (int64_t)disk_.size();
    stats_.disk_bytes = (int64_t)disk_bytes_;
}

void StateCache::disk_index() {
    disk_.clear();
    disk_bytes_ = 0;
    std::error_code ec;
    std::vector<std::pair<fs::file_time_type, std::string>> files;
    for (const auto &f : fs::directory_iterator(dir_, ec))
        if (f.is_regular_file() && f.path().extension() == kSuffix)
            files.emplace_back(f.last_write_time(ec), f.path().string());
    std::sort(files.begin(), files.end());  // oldest first: their last use comes first
    for (const auto &[t, path] : files) disk_index_file(path);
    disk_evict();
    stats_.disk_entries = (int64_t)disk_.size();
    stats_.disk_bytes = (int64_t)disk_bytes_;
}

void StateCache::disk_index_file(const std::string &path) {
    try {
        Header h = read_file(path, nullptr);
        if (h.identity != identity_)
            throw std::runtime_error("it belongs to another model or cache layout (" + h.identity + ")");
        DiskEntry e;
        e.tokens = std::move(h.tokens);
        e.min_prefix = h.min_prefix;
        e.path = path;
        e.bytes = fs::file_size(path);
        e.last_used = ++clock_;
        disk_bytes_ += e.bytes;
        disk_.push_back(std::move(e));
    } catch (const std::exception &ex) {
        stats_.disk_rejected++;
        warn("state cache: ignoring " + path + ": " + ex.what());
    }
}

std::shared_ptr<const CachedState> StateCache::disk_load(const DiskEntry &e) {
    const std::string path = e.path;
    try {
        auto s = std::make_shared<CachedState>();
        Header h = read_file(path, &s->data);
        if (h.identity != identity_)
            throw std::runtime_error("it belongs to another model or cache layout (" + h.identity + ")");
        s->tokens = std::move(h.tokens);
        s->min_prefix = h.min_prefix;
        return s;
    } catch (const std::exception &ex) {
        stats_.disk_rejected++;
        warn("state cache: ignoring " + path + ": " + ex.what());
        for (auto it = disk_.begin(); it != disk_.end(); ++it)
            if (it->path == path) {
                disk_bytes_ -= it->bytes;
                disk_.erase(it);
                break;
            }
        stats_.disk_entries = (int64_t)disk_.size();
        stats_.disk_bytes = (int64_t)disk_bytes_;
        return nullptr;
    }
}

void StateCache::disk_write(const CachedState &s) {
    const std::string name = file_name(s.tokens);
    const std::string path = (fs::path(dir_) / name).string();
    const std::string tmp = path + ".tmp" + std::to_string(getpid());
    Fnv f;
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    auto put = [&](const void *p, size_t n) {
        out.write(static_cast<const char *>(p), (std::streamsize)n);
        f.add(p, n);
    };
    const uint32_t id_len = (uint32_t)identity_.size(), n_tokens = (uint32_t)s.tokens.size();
    const uint64_t data_len = s.data.size();
    put(kMagic, sizeof kMagic);
    put(&kVersion, 4);
    put(&id_len, 4);
    put(identity_.data(), id_len);
    put(&s.min_prefix, 4);
    put(&n_tokens, 4);
    put(s.tokens.data(), s.tokens.size() * sizeof(llama_token));
    put(&data_len, 8);
    put(s.data.data(), s.data.size());
    const uint64_t sum = f.h;
    out.write(reinterpret_cast<const char *>(&sum), 8);
    out.close();
    std::error_code ec;
    if (!out) {
        fs::remove(tmp, ec);
        warn("state cache: cannot write " + path + " (disk full?): the state stays in RAM only");
        return;
    }
    fs::rename(tmp, path, ec);  // atomic: a reader sees the old file or the new one, never half
    if (ec) {
        fs::remove(tmp, ec);
        warn("state cache: cannot rename into " + path + ": " + ec.message());
        return;
    }
    const uint64_t bytes = sizeof kMagic + 16 + id_len + s.tokens.size() * sizeof(llama_token) + 16 + data_len;
    // The new file replaces an entry of the same name, and entries it serves entirely.
    for (auto it = disk_.begin(); it != disk_.end();) {
        if (it->path == path || (is_prefix(it->tokens, s.tokens) && s.min_prefix <= it->min_prefix)) {
            if (it->path != path) fs::remove(it->path, ec);
            disk_bytes_ -= it->bytes;
            it = disk_.erase(it);
        } else ++it;
    }
    disk_.push_back({s.tokens, s.min_prefix, path, bytes, ++clock_});
    disk_bytes_ += bytes;
    disk_evict();
    stats_.disk_entries = (int64_t)disk_.size();
    stats_.disk_bytes = (int64_t)disk_bytes_;
}

void StateCache::disk_evict() {
    while (disk_bytes_ > disk_budget_ && !disk_.empty()) {
        auto oldest = std::min_element(disk_.begin(), disk_.end(),
                                       [](const DiskEntry &a, const DiskEntry &b) { return a.last_used < b.last_used; });
        std::error_code ec;
        fs::remove(oldest->path, ec);
        disk_bytes_ -= oldest->bytes;
        disk_.erase(oldest);
    }
}

}  // namespace sarai
