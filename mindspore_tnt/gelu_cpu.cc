// Exact (erf) GELU and its gradient for MindSpore's CPU backend, as AOT custom-op kernels.
//
// y = x * 0.5 * (1 + erf(x / sqrt(2)))          (the formula of torch and nn.GELU)
// dx = dy * (0.5 * (1 + erf(x / sqrt(2))) + x * exp(-x^2 / 2) / sqrt(2 pi))
//
// erff and expf are declared with glibc's vector variants (libmvec), so the loops are
// vectorised without -ffast-math: IEEE semantics are kept and only the libm calls change.
// Elements are independent, so the loops are split over the machine's threads (cpu_parallel.h).
// Built and loaded by mindspore_tnt/gelu.py; float32 only (it falls back otherwise).
#include <cmath>
#include <cstdint>

#include "aot_kernel.h"
#include "cpu_parallel.h"

extern "C" float erff(float) __attribute__((simd("notinbranch")));
extern "C" float expf(float) __attribute__((simd("notinbranch")));

namespace {

constexpr float kSqrtHalf = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
constexpr int64_t kGrain = 1 << 15;  // elements per thread at least

}  // namespace

// params: x, y
TNT_AOT_KERNEL(GeluErf) {
  if (nparam != 2 || !tnt_cpu::all_float32(nparam, dtypes)) return 1;
  const float *x = tnt_cpu::in(params, 0);
  float *y = tnt_cpu::out(params, 1);
  tnt_cpu::parallel_for(tnt_cpu::numel(ndims[0], shapes[0]), kGrain, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      y[i] = x[i] * 0.5f * (1.0f + erff(x[i] * kSqrtHalf));
    }
  });
  return 0;
}

// params: x, dy, dx
TNT_AOT_KERNEL(GeluErfGrad) {
  if (nparam != 3 || !tnt_cpu::all_float32(nparam, dtypes)) return 1;
  const float *x = tnt_cpu::in(params, 0), *dy = tnt_cpu::in(params, 1);
  float *dx = tnt_cpu::out(params, 2);
  tnt_cpu::parallel_for(tnt_cpu::numel(ndims[0], shapes[0]), kGrain, [=](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float cdf = 0.5f * (1.0f + erff(x[i] * kSqrtHalf));
      const float pdf = kInvSqrt2Pi * expf(-0.5f * x[i] * x[i]);
      dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
  });
  return 0;
}
