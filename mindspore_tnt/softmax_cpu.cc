// Softmax over the last axis and its gradient for MindSpore's CPU backend, as AOT custom-op kernels:
//   y = exp(x - max(x)) / sum(exp(x - max(x)))  over each row;   dx = y * (dy - sum(dy * y)).
//
// The exponentials run on vector_math.h's lanes (glibc's vector expf, every element through the
// same code); a row's maximum and sums are taken lane-wise, in an order that depends on the row
// length alone. Rows are independent and split over the machine's threads (cpu_parallel.h): the same
// bits for any thread count. Built and loaded by mindspore_tnt/softmax.py; float32 only.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "aot_kernel.h"
#include "cpu_parallel.h"
#include "vector_math.h"

namespace {

using tnt_cpu::kLanes;

constexpr int64_t kGrain = 1 << 14;  // elements per thread at least

// The largest of x[0 .. n): lane-wise maxima, then across the lanes (the same value in any order).
float row_max(const float *x, int64_t n) {
  float m[kLanes];
  for (int i = 0; i < kLanes; ++i) m[i] = -std::numeric_limits<float>::infinity();
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
#pragma omp simd
    for (int i = 0; i < kLanes; ++i) m[i] = x[c + i] > m[i] ? x[c + i] : m[i];
  }
  for (; c < n; ++c) m[c % kLanes] = x[c] > m[c % kLanes] ? x[c] : m[c % kLanes];
  float out = m[0];
  for (int i = 1; i < kLanes; ++i) out = m[i] > out ? m[i] : out;
  return out;
}

// The sum of x[0 .. n) (times y[0 .. n) if given): lane-wise partial sums, then the lanes in
// order; the order depends on n alone.
float row_sum(const float *x, const float *y, int64_t n) {
  float s[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) {
#pragma omp simd
    for (int i = 0; i < kLanes; ++i) s[i] += y ? x[c + i] * y[c + i] : x[c + i];
  }
  for (; c < n; ++c) s[c % kLanes] += y ? x[c] * y[c] : x[c];
  float out = 0.0f;
  for (int i = 0; i < kLanes; ++i) out += s[i];
  return out;
}

void softmax_row(const float *x, int64_t n, float *y) {
  const float m = row_max(x, n);
  const float *in[1] = {x};
  tnt_cpu::lanes<1>(n, in, y, [m](const float *const *lane, float *out) {
    float t[kLanes];
#pragma omp simd
    for (int i = 0; i < kLanes; ++i) t[i] = lane[0][i] - m;
    tnt_cpu::exp_lanes(t, out);
  });
  const float s = row_sum(y, nullptr, n);
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) y[c] /= s;
}

}  // namespace

// params: x (..., n), y (..., n)
TNT_AOT_KERNEL(SoftmaxLastAxis) {
  int64_t n, rows;
  if (!tnt_cpu::float32_rows(nparam, 2, dtypes, ndims, shapes, {}, &n, &rows) ||
      tnt_cpu::numel(ndims[1], shapes[1]) != n * rows)
    return 1;
  const float *x = tnt_cpu::in(params, 0);
  float *y = tnt_cpu::out(params, 1);
  tnt_cpu::parallel_for(rows, kGrain / n + 1, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) softmax_row(x + r * n, n, y + r * n);
  });
  return 0;
}

// params: y (..., n), dy (..., n), dx (..., n)
TNT_AOT_KERNEL(SoftmaxLastAxisGrad) {
  int64_t n, rows;
  if (nparam != 3 || !tnt_cpu::all_float32(nparam, dtypes) || !tnt_cpu::last_axis(ndims, shapes, {}, &n, &rows))
    return 1;
  for (int i = 1; i < 3; ++i) {
    if (tnt_cpu::numel(ndims[i], shapes[i]) != n * rows) return 1;
  }
  const float *y = tnt_cpu::in(params, 0), *dy = tnt_cpu::in(params, 1);
  float *dx = tnt_cpu::out(params, 2);
  tnt_cpu::parallel_for(rows, kGrain / n + 1, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float *yr = y + r * n, *dyr = dy + r * n;
      float *dxr = dx + r * n;
      const float s = row_sum(dyr, yr, n);
#pragma omp simd
      for (int64_t c = 0; c < n; ++c) dxr[c] = yr[c] * (dyr[c] - s);
    }
  });
  return 0;
}
