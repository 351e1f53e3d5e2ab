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

constexpr int64_t kRowBlock = 16;     // rows whose statistics are computed together

// For m <= kRowBlock consecutive rows of n values: each row's mean as hi + lo (two floats:
// x - hi - lo keeps the double mean's precision where x is close to it) and 1 / sqrt(var + eps).
// The divisions and square roots run over the rows as vectors.
void row_stats(const float *x, int64_t m, int64_t n, float eps, float *mean_hi, float *mean_lo, float *rstd) {
  double mean[kRowBlock], sq[kRowBlock];
  for (int64_t j = 0; j < m; ++j) {
    const float *xr = x + j * n;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += xr[i];
    mean[j] = sum;
  }
  const double dn = static_cast<double>(n);
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) mean[j] /= dn;
  for (int64_t j = 0; j < m; ++j) {
    const float *xr = x + j * n;
    const double mu = mean[j];
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(xr[i]) - mu;
      s += d * d;
    }
    sq[j] = s;
  }
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) {
    const double var = sq[j] / dn;
    const float hi = static_cast<float>(mean[j]);
    mean_hi[j] = hi;
    mean_lo[j] = static_cast<float>(mean[j] - static_cast<double>(hi));
    rstd[j] = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
  }
}

}  // namespace

// params: x (..., n), gamma (n), beta (n), eps (1), y (..., n)
TNT_AOT_KERNEL(LayerNormLastAxis) {
  int64_t n, rows;
  if (!tnt_cpu::float32_rows(nparam, 5, dtypes, ndims, shapes, {1, 2}, &n, &rows)) return 1;
  const float *x = tnt_cpu::in(params, 0), *gamma = tnt_cpu::in(params, 1), *beta = tnt_cpu::in(params, 2);
  const float eps = *tnt_cpu::in(params, 3);
  float *y = tnt_cpu::out(params, 4);
  tnt_cpu::parallel_for(rows, std::max<int64_t>(kRowBlock, kGrain / n), [=](int64_t begin, int64_t end) {
    float mean[kRowBlock], mean_lo[kRowBlock], rstd[kRowBlock];
    for (int64_t r0 = begin; r0 < end; r0 += kRowBlock) {
      const int64_t m = std::min(kRowBlock, end - r0);
      row_stats(x + r0 * n, m, n, eps, mean, mean_lo, rstd);
      for (int64_t j = 0; j < m; ++j) {
        const float *xr = x + (r0 + j) * n;
        float *yr = y + (r0 + j) * n;
        const float mu = mean[j], lo = mean_lo[j], rs = rstd[j];
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) yr[i] = ((xr[i] - mu) - lo) * rs * gamma[i] + beta[i];
      }
    }
  });
  return 0;
}

// params: x (..., n), dy (..., n), gamma (n), eps (1), dx (..., n), dgamma (n), dbeta (n)
TNT_AOT_KERNEL(LayerNormLastAxisGrad) {
  int64_t n, rows;
  if (!tnt_cpu::float32_rows(nparam, 7, dtypes, ndims, shapes, {2}, &n, &rows)) return 1;
  const float *x = tnt_cpu::in(params, 0), *dy = tnt_cpu::in(params, 1), *gamma = tnt_cpu::in(params, 2);
  const float eps = *tnt_cpu::in(params, 3);
  float *dx = tnt_cpu::out(params, 4), *dgamma = tnt_cpu::out(params, 5), *dbeta = tnt_cpu::out(params, 6);
  const int64_t block_rows = std::max<int64_t>(1, kBlockElems / n);
  const int64_t blocks = (rows + block_rows - 1) / block_rows;
  // per block: its sums of dy * xhat (n) then of dy (n)
  std::vector<double> partial(static_cast<size_t>(blocks) * 2 * n, 0.0);
  double *part = partial.data();
  const double inv_n = 1.0 / static_cast<double>(n);
  tnt_cpu::parallel_for(blocks, std::max<int64_t>(1, kGrain / (block_rows * n)), [=](int64_t b0, int64_t b1) {
    std::vector<float> xhat(n);
    float *xh = xhat.data();
    float means[kRowBlock], means_lo[kRowBlock], rstds[kRowBlock];
    for (int64_t b = b0; b < b1; ++b) {
      double *dga = part + b * 2 * n;
      double *dba = dga + n;
      const int64_t last = std::min(rows, (b + 1) * block_rows);
      for (int64_t r0 = b * block_rows; r0 < last; r0 += kRowBlock) {
        const int64_t m = std::min(kRowBlock, last - r0);
        row_stats(x + r0 * n, m, n, eps, means, means_lo, rstds);
        for (int64_t j = 0; j < m; ++j) {
          const float *xr = x + (r0 + j) * n;
          const float *dyr = dy + (r0 + j) * n;
          float *dxr = dx + (r0 + j) * n;
          const float mean = means[j], mean_lo = means_lo[j], rstd = rstds[j];
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
