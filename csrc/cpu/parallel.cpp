#include "mmcurate/parallel.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

namespace mmcurate {

int default_num_threads() {
  if (const char* env = std::getenv("MMCURATE_NUM_THREADS")) {
    const long n = std::strtol(env, nullptr, 10);
    if (n > 0) return int(std::min<long>(n, kMaxThreads));
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? int(std::min<unsigned>(hc, unsigned(kMaxThreads))) : 1;
}

void parallel_for(int64_t n, int num_threads, const std::function<void(int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int threads = num_threads > 0 ? std::min(num_threads, kMaxThreads) : default_num_threads();
  threads = int(std::min<int64_t>(threads, (n + grain - 1) / grain));
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mu;
  auto worker = [&] {
    try {
      for (;;) {
        int64_t begin = next.fetch_add(grain, std::memory_order_relaxed);
        if (begin >= n) break;
        int64_t end = std::min(n, begin + grain);
        for (int64_t i = begin; i < end; ++i) fn(i);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
      next.store(n);  // stop the others early
    }
  };
  std::vector<std::thread> pool;
  // A thread the OS cannot give (EAGAIN under a memory or process limit) is not an error: the work is
  // shared among the threads that did start (the caller's at least). Letting std::system_error escape
  // here would destroy joinable threads, i.e. std::terminate.
  try {
    pool.reserve(size_t(threads - 1));
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  } catch (const std::system_error&) {
  } catch (const std::bad_alloc&) {
  }
  worker();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace mmcurate
