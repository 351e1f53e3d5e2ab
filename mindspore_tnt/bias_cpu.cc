// A bias added along the last axis and its gradient for MindSpore's CPU backend, as AOT
// custom-op kernels: y[r, c] = x[r, c] + b[c]; db[c] = sum over rows r of dy[r, c].
//
// MindSpore's CPU BiasAddGrad reduces the rows one column at a time; here the rows are cut
// into fixed blocks of kBlockRows, each block's column sums accumulate in double, and the
// blocks are added in order: the same bits for any thread count. Built and loaded by
// mindspore_tnt/dense.py; float32 only (it falls back otherwise).
#include <cstdint>
#include <vector>

#include "aot_kernel.h"
#include "cpu_parallel.h"

namespace {

constexpr int64_t kBlockRows = 256;
constexpr int64_t kGrain = 1 << 15;  // elements per thread at least

}  // namespace

// params: x (..., n), b (n), y (..., n)
TNT_AOT_KERNEL(BiasAddLastAxis) {
  int64_t n, rows;
  if (!tnt_cpu::float32_rows(nparam, 3, dtypes, ndims, shapes, {1}, &n, &rows)) return 1;
  const float *x = tnt_cpu::in(params, 0), *b = tnt_cpu::in(params, 1);
  float *y = tnt_cpu::out(params, 2);
  tnt_cpu::parallel_for(rows, kGrain / n + 1, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float *xr = x + r * n;
      float *yr = y + r * n;
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) yr[c] = xr[c] + b[c];
    }
  });
  return 0;
}

// params: dy (..., n), b (n; only its shape is read), db (n)
TNT_AOT_KERNEL(BiasAddLastAxisGrad) {
  int64_t n, rows;
  if (!tnt_cpu::float32_rows(nparam, 3, dtypes, ndims, shapes, {1}, &n, &rows)) return 1;
  const float *dy = tnt_cpu::in(params, 0);
  float *db = tnt_cpu::out(params, 2);
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
  std::vector<double> partial(blocks * n, 0.0);
  tnt_cpu::parallel_for(blocks, kGrain / (kBlockRows * n) + 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      double *acc = partial.data() + k * n;
      for (int64_t r = k * kBlockRows; r < std::min(rows, (k + 1) * kBlockRows); ++r) {
        const float *dyr = dy + r * n;
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) acc[c] += dyr[c];
      }
    }
  });
  for (int64_t c = 0; c < n; ++c) {
    double sum = 0.0;
    for (int64_t k = 0; k < blocks; ++k) sum += partial[k * n + c];
    db[c] = static_cast<float>(sum);
  }
  return 0;
}
