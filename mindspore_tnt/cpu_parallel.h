// Loops split over threads for the CPU kernels (gelu_cpu.cc, layernorm_cpu.cc, ...).
//
// parallel_for(n, grain, fn) calls fn(begin, end) on contiguous parts of [0, n): as many
// parts as the machine has hardware threads (or $TNT_CPU_THREADS, read once), each at least
// `grain` items, the caller running the first. Small ranges run on the calling thread alone.
// Parts never overlap, so a kernel whose items are independent gives the same bits for any
// thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

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
  const int64_t parts = std::max<int64_t>(1, std::min(hardware_threads(), n / std::max<int64_t>(grain, 1)));
  if (parts == 1) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t step = (n + parts - 1) / parts;
  std::vector<std::thread> workers;
  for (int64_t begin = step; begin < n; begin += step) {
    workers.emplace_back(fn, begin, std::min(n, begin + step));
  }
  fn(int64_t{0}, std::min(n, step));
  for (auto &worker : workers) worker.join();
}

}  // namespace tnt_cpu
