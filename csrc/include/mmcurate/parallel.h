// parallel_for over a batch: dynamic scheduling on a process-wide thread pool.
// Kernels call this instead of spawning threads; num_threads <= 0 means "all cores".
#pragma once
#include <cstdint>
#include <functional>

namespace mmcurate {

// Upper bound on threads per parallel_for (larger requests are clamped; the Python API refuses them).
constexpr int kMaxThreads = 1024;

int default_num_threads();  // MMCURATE_NUM_THREADS env, else hardware_concurrency(); at most kMaxThreads

// Runs fn(i) for i in [0, n) on up to num_threads threads (the caller's thread included); when the OS
// refuses a thread, on those it gave.
// Items are claimed in chunks of `grain` from an atomic counter. An exception thrown by fn
// is rethrown in the caller after all workers stop.
void parallel_for(int64_t n, int num_threads, const std::function<void(int64_t)>& fn, int64_t grain = 1);

}  // namespace mmcurate
