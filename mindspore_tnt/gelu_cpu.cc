// Exact (erf) GELU and its gradient for MindSpore's CPU backend, as AOT custom-op kernels.
//
// y = x * 0.5 * (1 + erf(x / sqrt(2)))          (the formula of torch and nn.GELU)
// dx = dy * (0.5 * (1 + erf(x / sqrt(2))) + x * exp(-x^2 / 2) / sqrt(2 pi))
//
// GeluErfBias and its gradient take x + b (a bias along the last axis, one float32 add) in
// place of x: a Dense layer's bias add and the GELU after it in one pass over memory, the
// same bits as the bias add followed by GeluErf.
//
// erf and exp run on vector_math.h's lanes, every element through the same code (erf as
// polynomials within 1.42 ulp, exp on glibc's vector math library). Elements are independent,
// so the loops are split over the machine's threads (cpu_parallel.h) in whole lanes: the same
// bits for any thread count.
// Built and loaded by mindspore_tnt/gelu.py; float32 only (it falls back otherwise).
#include <cstdint>

#include "aot_kernel.h"
#include "cpu_parallel.h"
#include "vector_math.h"

namespace {

using tnt_cpu::kLanes;

constexpr float kSqrtHalf = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
constexpr int64_t kGrain = 1 << 15;  // elements per thread at least

// y = GELU(x + b) on one lane; b is nullptr for no bias
inline void gelu(const float *x, const float *b, float *y) {
  float z[kLanes], e[kLanes];
#pragma omp simd
  for (int i = 0; i < kLanes; ++i) {
    z[i] = b ? x[i] + b[i] : x[i];
    e[i] = z[i] * kSqrtHalf;
  }
  tnt_cpu::erf_lanes(e, e);
#pragma omp simd
  for (int i = 0; i < kLanes; ++i) y[i] = z[i] * 0.5f * (1.0f + e[i]);
}

// dx = dy * GELU'(x + b) on one lane; b is nullptr for no bias
inline void gelu_grad(const float *x, const float *b, const float *dy, float *dx) {
  float z[kLanes], e[kLanes], p[kLanes];
#pragma omp simd
  for (int i = 0; i < kLanes; ++i) {
    z[i] = b ? x[i] + b[i] : x[i];
    e[i] = z[i] * kSqrtHalf;
    p[i] = -0.5f * z[i] * z[i];
  }
  tnt_cpu::erf_lanes(e, e);
  tnt_cpu::exp_lanes(p, p);
#pragma omp simd
  for (int i = 0; i < kLanes; ++i) {
    const float cdf = 0.5f * (1.0f + e[i]);
    const float pdf = kInvSqrt2Pi * p[i];
    dx[i] = dy[i] * (cdf + z[i] * pdf);
  }
}

// Whole lanes of numel elements over the threads: f(begin, end) with begin a multiple of kLanes.
template <typename Fn>
void over_lanes(int64_t numel, Fn f) {
  tnt_cpu::parallel_for((numel + kLanes - 1) / kLanes, kGrain / kLanes, [=](int64_t begin, int64_t end) {
    f(begin * kLanes, std::min(numel, end * kLanes));
  });
}

// Rows of n over the threads, rows whole: f(row) for each row, inlined in each chunk's loop.
template <typename Fn>
void over_rows(int64_t rows, int64_t n, Fn f) {
  tnt_cpu::parallel_for(rows, kGrain / n + 1, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) f(r);
  });
}

}  // namespace

// params: x, y
TNT_AOT_KERNEL(GeluErf) {
  if (nparam != 2 || !tnt_cpu::all_float32(nparam, dtypes)) return 1;
  const float *x = tnt_cpu::in(params, 0);
  float *y = tnt_cpu::out(params, 1);
  over_lanes(tnt_cpu::numel(ndims[0], shapes[0]), [=](int64_t begin, int64_t end) {
    tnt_cpu::lanes<1>(end - begin, {x + begin}, y + begin,
                      [](const float *const *in, float *out) { gelu(in[0], nullptr, out); });
  });
  return 0;
}

// params: x, dy, dx
TNT_AOT_KERNEL(GeluErfGrad) {
  if (nparam != 3 || !tnt_cpu::all_float32(nparam, dtypes)) return 1;
  const float *x = tnt_cpu::in(params, 0), *dy = tnt_cpu::in(params, 1);
  float *dx = tnt_cpu::out(params, 2);
  over_lanes(tnt_cpu::numel(ndims[0], shapes[0]), [=](int64_t begin, int64_t end) {
    tnt_cpu::lanes<2>(end - begin, {x + begin, dy + begin}, dx + begin,
                      [](const float *const *in, float *out) { gelu_grad(in[0], nullptr, in[1], out); });
  });
  return 0;
}

// params: x (..., n), b (n), y = GELU(x + b)
TNT_AOT_KERNEL(GeluErfBias) {
  int64_t n, rows;
  if (!tnt_cpu::float32_rows(nparam, 3, dtypes, ndims, shapes, {1}, &n, &rows)) return 1;
  const float *x = tnt_cpu::in(params, 0), *b = tnt_cpu::in(params, 1);
  float *y = tnt_cpu::out(params, 2);
  over_rows(rows, n, [=](int64_t r) __attribute__((always_inline)) {
    tnt_cpu::lanes<2>(n, {x + r * n, b}, y + r * n,
                      [](const float *const *in, float *out) { gelu(in[0], in[1], out); });
  });
  return 0;
}

// params: x (..., n), b (n), dy (..., n), dx = dy * GELU'(x + b)
TNT_AOT_KERNEL(GeluErfBiasGrad) {
  int64_t n, rows;
  if (!tnt_cpu::float32_rows(nparam, 4, dtypes, ndims, shapes, {1}, &n, &rows)) return 1;
  const float *x = tnt_cpu::in(params, 0), *b = tnt_cpu::in(params, 1), *dy = tnt_cpu::in(params, 2);
  float *dx = tnt_cpu::out(params, 3);
  over_rows(rows, n, [=](int64_t r) __attribute__((always_inline)) {
    tnt_cpu::lanes<3>(n, {x + r * n, b, dy + r * n}, dx + r * n,
                      [](const float *const *in, float *out) { gelu_grad(in[0], in[1], in[2], out); });
  });
  return 0;
}
