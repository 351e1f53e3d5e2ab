// LayerNorm over the last axis and its gradient for MindSpore's CPU backend, as AOT custom-op kernels.
//
// Per row of n values: mean = sum(x) / n, var = sum((x - mean)^2) / n (biased),
// rstd = 1 / sqrt(var + eps), y = (x - mean) * rstd * gamma + beta  (torch's and nn.LayerNorm's formula).
// Mean and variance are two passes over the row, accumulated in double: a row with a large
// mean and a small spread loses nothing to cancellation.
// Backward, with xhat = (x - mean) * rstd and g = dy * gamma:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dgamma = sum_rows dy * xhat,  dbeta = sum_rows dy
// (the row statistics are recomputed from x rather than saved).
// Rows are independent, so y and dx are split over the machine's threads (cpu_parallel.h).
// dgamma and dbeta are sums over rows: each block of rows (its size fixed by the row length
// alone) sums its rows in order in double, and the block sums are added in block order, so
// the result is the same bits for any number of threads.
// eps is a one-element float32 input. Built and loaded by mindspore_tnt/layernorm.py; float32 only.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "aot_kernel.h"
#include "cpu_parallel.h"

namespace {

constexpr int64_t kGrain = 1 << 14;       // elements per thread at least
constexpr int64_t kBlockElems = 1 << 13;  // elements in a block of rows for dgamma and dbeta (or one longer row)

// The mean of one row as hi + lo (two floats: x - hi - lo keeps the double mean's precision
// where x is close to it) and 1 / sqrt(var + eps)
void row_stats(const float *x, int64_t n, float eps, float *mean_hi, float *mean_lo, float *rstd_out) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / static_cast<double>(n);
  double sq = 0.0;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    sq += d * d;
  }
  const double var = sq / static_cast<double>(n);
  *mean_hi = static_cast<float>(mean);
  *mean_lo = static_cast<float>(mean - static_cast<double>(*mean_hi));
  *rstd_out = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
}

}  // namespace

// params: x (..., n), gamma (n), beta (n), eps (1), y (..., n)
extern "C" int LayerNormLastAxis(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *stream, void *extra) {
  if (nparam != 5 || !tnt_cpu::all_float32(nparam, dtypes) || ndims[0] < 1) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  const int64_t n = shapes[0][ndims[0] - 1];
  if (n <= 0 || tnt_cpu::numel(ndims[1], shapes[1]) != n || tnt_cpu::numel(ndims[2], shapes[2]) != n) return 1;
  const int64_t rows = tnt_cpu::numel(ndims[0], shapes[0]) / n;
  tnt_cpu::parallel_for(rows, std::max<int64_t>(1, kGrain / n), [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float *xr = x + r * n;
      float *yr = y + r * n;
      float mean, mean_lo, rstd;
      row_stats(xr, n, eps, &mean, &mean_lo, &rstd);
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yr[i] = ((xr[i] - mean) - mean_lo) * rstd * gamma[i] + beta[i];
    }
  });
  return 0;
}

// params: x (..., n), dy (..., n), gamma (n), eps (1), dx (..., n), dgamma (n), dbeta (n)
extern "C" int LayerNormLastAxisGrad(int nparam, void **params, int *ndims, int64_t **shapes,
                                     const char **dtypes, void *stream, void *extra) {
  if (nparam != 7 || !tnt_cpu::all_float32(nparam, dtypes) || ndims[0] < 1) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  const float *gamma = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *dx = static_cast<float *>(params[4]);
  float *dgamma = static_cast<float *>(params[5]);
  float *dbeta = static_cast<float *>(params[6]);
  const int64_t n = shapes[0][ndims[0] - 1];
  if (n <= 0 || tnt_cpu::numel(ndims[2], shapes[2]) != n) return 1;
  const int64_t rows = tnt_cpu::numel(ndims[0], shapes[0]) / n;
  const int64_t block_rows = std::max<int64_t>(1, kBlockElems / n);
  const int64_t blocks = (rows + block_rows - 1) / block_rows;
  // per block: its sums of dy * xhat (n) then of dy (n)
  std::vector<double> partial(static_cast<size_t>(blocks) * 2 * n, 0.0);
  double *part = partial.data();
  const double inv_n = 1.0 / static_cast<double>(n);
  tnt_cpu::parallel_for(blocks, std::max<int64_t>(1, kGrain / (block_rows * n)), [=](int64_t b0, int64_t b1) {
    std::vector<float> xhat(n);
    float *xh = xhat.data();
    for (int64_t b = b0; b < b1; ++b) {
      double *dga = part + b * 2 * n;
      double *dba = dga + n;
      for (int64_t r = b * block_rows; r < std::min(rows, (b + 1) * block_rows); ++r) {
        const float *xr = x + r * n;
        const float *dyr = dy + r * n;
        float *dxr = dx + r * n;
        float mean, mean_lo, rstd;
        row_stats(xr, n, eps, &mean, &mean_lo, &rstd);
        double sum_g = 0.0, sum_gx = 0.0;
#pragma omp simd reduction(+ : sum_g, sum_gx)
        for (int64_t i = 0; i < n; ++i) {
          const float h = ((xr[i] - mean) - mean_lo) * rstd;
          const float g = dyr[i] * gamma[i];
          xh[i] = h;
          sum_g += g;
          sum_gx += static_cast<double>(g) * h;
          dga[i] += static_cast<double>(dyr[i]) * h;
          dba[i] += dyr[i];
        }
        const float mean_g = static_cast<float>(sum_g * inv_n);
        const float mean_gx = static_cast<float>(sum_gx * inv_n);
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) dxr[i] = rstd * (dyr[i] * gamma[i] - mean_g - xh[i] * mean_gx);
      }
    }
  });
  for (int64_t b = 1; b < blocks; ++b) {
#pragma omp simd
    for (int64_t i = 0; i < 2 * n; ++i) part[i] += part[b * 2 * n + i];
  }
  for (int64_t i = 0; i < n; ++i) {
    dgamma[i] = static_cast<float>(part[i]);
    dbeta[i] = static_cast<float>(part[n + i]);
  }
  return 0;
}
