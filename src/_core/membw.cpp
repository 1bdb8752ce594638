#include "membw.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "errors.h"

namespace sarai {
namespace {

// Four independent sums so that the loop is bound by loads, not by one add chain;
// the compiler vectorises it with whatever the build's baseline ISA has (SSE2 in
// the portable build: two 16-byte loads a cycle still outrun any memory system).
uint64_t sum_words(const uint64_t *p, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) {
        a += p[i];
        b += p[i + 1];
        c += p[i + 2];
        d += p[i + 3];
    }
    return a + b + c + d;
}

using Clock = std::chrono::steady_clock;

}  // namespace

Bandwidth read_bandwidth(size_t bytes, int threads, int passes) {
    if (threads < 1) throw InvalidArgument("threads must be >= 1");
    if (passes < 1) throw InvalidArgument("passes must be >= 1");
    if (bytes < (size_t(1) << 20)) throw InvalidArgument("the buffer must be at least 1 MiB");
    const size_t words_per_thread = bytes / sizeof(uint64_t) / (size_t)threads / 8 * 8;
    const size_t n_words = words_per_thread * (size_t)threads;
    std::unique_ptr<uint64_t[]> buffer(new uint64_t[n_words]);
    uint64_t *base = buffer.get();

    // Workers wait for a pass number, read their slice, then count themselves done;
    // the calling thread is worker 0. Spinning (with yields) keeps the start of a
    // pass to microseconds against the milliseconds a pass takes.
    std::atomic<int> pass{-1}, done{0};
    std::atomic<uint64_t> sink{0};  // the sums go somewhere, so the loads cannot be dropped
    auto work = [&](int t, bool first_touch) {
        uint64_t *p = base + (size_t)t * words_per_thread;
        if (first_touch) {
            std::memset(p, t + 1, words_per_thread * sizeof(uint64_t));
        } else {
            sink.fetch_add(sum_words(p, words_per_thread), std::memory_order_relaxed);
        }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) {
        pool.emplace_back([&, t] {
            for (int seen = -1;;) {
                int now;
                while ((now = pass.load(std::memory_order_acquire)) == seen) std::this_thread::yield();
                if (now == passes + 1) return;
                seen = now;
                work(t, now == 0);
                done.fetch_add(1, std::memory_order_acq_rel);
            }
        });
    }
    std::vector<double> seconds;
    for (int i = 0; i <= passes; ++i) {  // pass 0 touches the pages, the rest are timed
        done.store(0);
        const auto start = Clock::now();
        pass.store(i, std::memory_order_release);
        work(0, i == 0);
        while (done.load(std::memory_order_acquire) != threads - 1) std::this_thread::yield();
        if (i > 0) seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
    pass.store(passes + 1, std::memory_order_release);
    for (auto &th : pool) th.join();

    std::sort(seconds.begin(), seconds.end());
    const double read = (double)(n_words * sizeof(uint64_t));
    Bandwidth out;
    out.bytes_per_s = read / seconds.front();
    out.median_bytes_per_s = read / seconds[seconds.size() / 2];
    out.threads = threads;
    out.bytes = (size_t)read;
    out.passes = passes;
    return out;
}

}  // namespace sarai
