// Softmax of scaled scores over the last axis and its gradient for MindSpore's CPU backend,
// as AOT custom-op kernels.
//
// Per row of n values: v = x * scale (the float32 product ``attn * scale`` gives),
// y = exp(v - max v) / sum(exp(v - max v)), the sum in double.
// Backward: dx = (y * (dy - sum(dy * y))) * scale, the row sum in double (the softmax's
// gradient, then the scaling's, as torch computes them).
// expf is declared with glibc's vector variant (libmvec), so the loops are vectorised without
// -ffast-math. Rows are independent, so they are split over the machine's threads (cpu_parallel.h).
// scale is a one-element float32 input. Built and loaded by mindspore_tnt/softmax.py; float32 only.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "aot_kernel.h"
#include "cpu_parallel.h"

extern "C" float expf(float) __attribute__((simd("notinbranch")));

namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per thread at least

}  // namespace

// params: x (..., n), scale (1), y (..., n)
extern "C" int ScaledSoftmax(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void *stream, void *extra) {
  if (nparam != 3 || !tnt_cpu::all_float32(nparam, dtypes) || ndims[0] < 1 || tnt_cpu::numel(ndims[1], shapes[1]) != 1) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float scale = *static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t n = shapes[0][ndims[0] - 1];
  if (n <= 0) return 1;
  const int64_t rows = tnt_cpu::numel(ndims[0], shapes[0]) / n;
  tnt_cpu::parallel_for(rows, std::max<int64_t>(1, kGrain / n), [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float *xr = x + r * n;
      float *yr = y + r * n;
      // v is stored before v - max is taken: in one expression the compiler may fuse the
      // product and the difference into an FMA, which skips the product's rounding.
      float vmax = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : vmax)
      for (int64_t i = 0; i < n; ++i) {
        yr[i] = xr[i] * scale;
        vmax = std::max(vmax, yr[i]);
      }
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < n; ++i) {
        const float e = expf(yr[i] - vmax);
        yr[i] = e;
        sum += e;
      }
      const float inv = static_cast<float>(1.0 / sum);
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yr[i] *= inv;
    }
  });
  return 0;
}

// params: y (..., n), dy (..., n), scale (1), dx (..., n)
extern "C" int ScaledSoftmaxGrad(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                 void *stream, void *extra) {
  if (nparam != 4 || !tnt_cpu::all_float32(nparam, dtypes) || ndims[0] < 1 || tnt_cpu::numel(ndims[2], shapes[2]) != 1) return 1;
  const float *y = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  const float scale = *static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t n = shapes[0][ndims[0] - 1];
  if (n <= 0) return 1;
  const int64_t rows = tnt_cpu::numel(ndims[0], shapes[0]) / n;
  tnt_cpu::parallel_for(rows, std::max<int64_t>(1, kGrain / n), [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float *yr = y + r * n;
      const float *dyr = dy + r * n;
      float *dxr = dx + r * n;
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < n; ++i) dot += static_cast<double>(dyr[i]) * yr[i];
      const float s = static_cast<float>(dot);
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dxr[i] = (yr[i] * (dyr[i] - s)) * scale;
    }
  });
  return 0;
}
