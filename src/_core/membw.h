// The machine's sustained memory read bandwidth, measured with a streaming kernel.
//
// Generating one token reads every weight of the model once, so tokens/s can be at
// most (read bandwidth) / (weight bytes per token): the roofline that bench reports
// generation against. The kernel is what generation does to memory, without the
// arithmetic: each thread sums 64-bit words over its own contiguous slice of one
// buffer far larger than any last-level cache (STREAM's method, read-only: weights
// are never written while generating), pages touched first by the thread that reads
// them, and the best of several passes is kept (STREAM reports the best, since
// interference from other processes only ever slows a pass down).
#pragma once

#include <cstddef>

namespace sarai {

struct Bandwidth {
    double bytes_per_s = 0;  // best pass: buffer bytes / seconds
    double median_bytes_per_s = 0;
    int threads = 0;
    size_t bytes = 0;  // buffer size read per pass
    int passes = 0;
};

// Throws InvalidArgument for threads < 1, passes < 1 or bytes < 1 MiB; the buffer is
// rounded down to a multiple of 64 bytes per thread.
Bandwidth read_bandwidth(size_t bytes, int threads, int passes);

}  // namespace sarai
