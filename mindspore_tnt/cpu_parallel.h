// Loops split over threads for the CPU kernels (gelu_cpu.cc, layernorm_cpu.cc, ...).
//
// parallel_for(n, grain, fn) calls fn(begin, end) on contiguous chunks covering [0, n), on
// the calling thread and on helper threads: one helper fewer than the machine's hardware
// threads (or $TNT_CPU_THREADS, read once), fewer where a thread would get under `grain`
// items. Small ranges run on the calling thread alone. The caller and the helpers take
// chunks in turn until none is left, and the caller waits only for chunks a helper has
// taken: on a busy machine a helper the scheduler has not started yet costs nothing (it
// finds no chunk when it runs). Chunks never overlap and their bounds depend on n and the
// thread count alone, so a kernel whose items are independent, and computed the same way
// wherever a chunk starts or ends (vector_math.h for libm calls), gives the same bits for any
// thread count and any order in which the chunks run.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <system_error>
#include <thread>

namespace tnt_cpu {

inline int64_t hardware_threads() {
  static const int64_t n = [] {
    const char *env = std::getenv("TNT_CPU_THREADS");
    const int64_t given = env ? std::atoll(env) : 0;
    return given > 0 ? given : static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency()));
  }();
  return n;
}

template <typename Fn>
void parallel_for(int64_t n, int64_t grain, Fn fn) {
  constexpr int64_t kChunksPerThread = 4;
  const int64_t threads = std::max<int64_t>(1, std::min(hardware_threads(), n / std::max<int64_t>(grain, 1)));
  if (threads == 1) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t step = (n + threads * kChunksPerThread - 1) / (threads * kChunksPerThread);
  const int64_t chunks = (n + step - 1) / step;
  struct Work {
    std::atomic<int64_t> next{0};  // the next chunk to take
    std::atomic<int64_t> done{0};  // chunks finished
  };
  // Shared with the helpers, which may start after this call has returned: they then take no
  // chunk and touch nothing else.
  auto work = std::make_shared<Work>();
  const Fn *body = &fn;
  auto run = [work, body, n, step, chunks] {
    for (int64_t c; (c = work->next.fetch_add(1)) < chunks;) {
      (*body)(c * step, std::min(n, (c + 1) * step));
      work->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < threads; ++t) {
    try {
      std::thread(run).detach();
    } catch (const std::system_error &) {  // no thread to be had: the caller takes the chunks left
      break;
    }
  }
  run();
  while (work->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

}  // namespace tnt_cpu
