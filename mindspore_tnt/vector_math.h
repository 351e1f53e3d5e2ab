// erf and exp over lanes of kLanes floats, every lane through the same code: erf as two
// polynomials (below), exp through one variant of glibc's vector math library (libmvec): the
// AVX-512 one, else the AVX2 one, else scalar libm.
//
// A vectorised loop runs its remainder through scalar expf, which can differ from the vector
// variants in the last bit: the bits of an element would then depend on where the loop's
// chunks (and so the thread count) put it. Loops built on `lanes` compute every element,
// remainders included, with the same call.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
extern "C" __m512 _ZGVeN16v_expf(__m512);
#define TNT_VECTOR_MATH(f) _ZGVeN16v_##f
#elif defined(__AVX2__)
#include <immintrin.h>
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

// erf(x) = x + x·P(x²) below |x| = 1, 1 - Q((|x| - 2.5)·2/3) up to 4, 1 beyond (erf's float32
// value there), with x's sign; NaN stays NaN. Coefficients from scripts/erf_coefficients.py.
// Against double erf over every float in [0, 4.5]: at most 1.42 ulp (test_gelu_kernel.py
// checks a sample). It replaces libmvec's erff, which took most of the GELU kernel's time.
constexpr float kErfP[] = {
    0.12837916612625122f, -0.3761262595653534f, 0.11283578723669052f, -0.026853347197175026f,
    0.005187162198126316f, -0.0007997853099368513f, 7.806902431184426e-05f};
constexpr float kErfQ[] = {
    0.0004069526621606201f, -0.0032672833185642958f, 0.01225277129560709f, -0.028187036514282227f,
    0.04365234076976776f, -0.046392522752285004f, 0.03186355158686638f, -0.009569182060658932f,
    -0.006624588742852211f, 0.010394944809377193f, -0.004685649648308754f, -0.0015293738106265664f,
    0.002045830013230443f, -9.91423221421428e-05f, -0.0002616059791762382f};

inline void erf_lanes(const float *x, float *y) {
#pragma omp simd
  for (int i = 0; i < kLanes; ++i) {
    const float a = std::fabs(x[i]), u = a * a, t = (a - 2.5f) * (2.f / 3.f);
    float p = kErfP[6], q = kErfQ[14];
#pragma GCC unroll 16
    for (int k = 5; k >= 0; --k) p = std::fma(p, u, kErfP[k]);
#pragma GCC unroll 16
    for (int k = 13; k >= 0; --k) q = std::fma(q, t, kErfQ[k]);
    y[i] = std::copysign(a >= 4.f ? 1.f : a >= 1.f ? 1.f - q : std::fma(a, p, a), x[i]);
  }
}

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
