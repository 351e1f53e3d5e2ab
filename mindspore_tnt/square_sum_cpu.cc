// The sum of squares of a float32 tensor, for MindSpore's CPU backend as an AOT custom-op
// kernel: the gradient norm of a training step is the square root of these sums over every
// parameter's gradient.
//
// MindSpore's CPU Square + ReduceSum took 150 ms of a TNT-S training step (363 gradients).
// Here each block of kBlock elements sums its squares in double, vectorised, and the blocks
// are added in order: the same bits for any thread count. Built and loaded by
// mindspore_tnt/square_sum.py; float32 only (it falls back otherwise).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "aot_kernel.h"
#include "cpu_parallel.h"

namespace {

constexpr int64_t kBlock = 1 << 14;  // elements summed apart, then added in order

}  // namespace

// params: x (any shape), y (1)
TNT_AOT_KERNEL(SquareSum) {
  if (nparam != 2 || !tnt_cpu::all_float32(nparam, dtypes) || tnt_cpu::numel(ndims[1], shapes[1]) != 1) return 1;
  const float *x = tnt_cpu::in(params, 0);
  float *y = tnt_cpu::out(params, 1);
  const int64_t n = tnt_cpu::numel(ndims[0], shapes[0]);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
  tnt_cpu::parallel_for(blocks, 4, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      double sum = 0.0;
      const int64_t stop = std::min(n, (k + 1) * kBlock);
#pragma omp simd reduction(+ : sum)
      for (int64_t i = k * kBlock; i < stop; ++i) sum += static_cast<double>(x[i]) * x[i];
      partial[k] = sum;
    }
  });
  double total = 0.0;
  for (int64_t k = 0; k < blocks; ++k) total += partial[k];
  y[0] = static_cast<float>(total);
  return 0;
}
