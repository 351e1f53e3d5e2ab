// erff and expf over lanes of kLanes floats, every lane through the same variant of glibc's
// vector math library (libmvec): the AVX-512 one, else the AVX2 one, else scalar libm.
//
// A vectorised loop runs its remainder through scalar erff/expf, which can differ from the
// vector variants in the last bit: the bits of an element would then depend on where the
// loop's chunks (and so the thread count) put it. Loops built on `lanes` compute every
// element, remainders included, with the same call.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
extern "C" __m512 _ZGVeN16v_erff(__m512);
extern "C" __m512 _ZGVeN16v_expf(__m512);
#define TNT_VECTOR_MATH(f) _ZGVeN16v_##f
#elif defined(__AVX2__)
#include <immintrin.h>
extern "C" __m256 _ZGVdN8v_erff(__m256);
extern "C" __m256 _ZGVdN8v_expf(__m256);
#define TNT_VECTOR_MATH(f) _ZGVdN8v_##f
#else
#define TNT_VECTOR_MATH(f) nullptr
#endif

namespace tnt_cpu {

constexpr int kLanes = 16;

// y = f(x) on kLanes floats: `vector` (a libmvec variant) over its width, else `scalar`.
template <typename Vector, typename Scalar>
inline void on_lanes(Vector vector, Scalar scalar, const float *x, float *y) {
#if defined(__AVX512F__)
  _mm512_storeu_ps(y, vector(_mm512_loadu_ps(x)));
#elif defined(__AVX2__)
  for (int h = 0; h < kLanes; h += 8) _mm256_storeu_ps(y + h, vector(_mm256_loadu_ps(x + h)));
#else
  for (int i = 0; i < kLanes; ++i) y[i] = scalar(x[i]);
#endif
}

inline void erf_lanes(const float *x, float *y) { on_lanes(TNT_VECTOR_MATH(erff), erff, x, y); }
inline void exp_lanes(const float *x, float *y) { on_lanes(TNT_VECTOR_MATH(expf), expf, x, y); }

// fn(ins, out) on lanes of kLanes elements covering [0, n) of the `kIn` arrays `in` and of `out`:
// ins[k] points at in[k] + i. The last lane, when n is not a multiple of kLanes, runs on
// zero-padded copies, through the same fn.
template <int kIn, typename Fn>
__attribute__((always_inline)) inline void lanes(int64_t n, const float *const (&in)[kIn], float *out, Fn fn) {
  const float *ins[kIn];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kIn; ++k) ins[k] = in[k] + i;
    fn(ins, out + i);
  }
  if (i == n) return;
  float pad[kIn][kLanes] = {}, res[kLanes];
  for (int k = 0; k < kIn; ++k) {
    for (int64_t j = i; j < n; ++j) pad[k][j - i] = in[k][j];
    ins[k] = pad[k];
  }
  fn(ins, res);
  for (int64_t j = i; j < n; ++j) out[j] = res[j - i];
}

}  // namespace tnt_cpu
