// Multi-head self-attention over short sequences and its gradient for MindSpore's CPU backend,
// as AOT custom-op kernels.
//
// Inputs a (N, L, Ca) and b (N, L, Cb) with Ca + Cb = 3 D: q, k and v are the first, second
// and third D columns of [a, b] (TNT: a = qk, b = v; PyramidTNT: a = q, b = kv), each split
// into H heads of d = D / H columns. Per sequence and head, with s the float32 scale:
//   S = (q kᵀ) * s,  P = softmax(S) (max-subtracted, over the keys),  O = P v
// and O is written to columns h*d .. h*d+d-1 of the (N, L, D) output. Backward, P recomputed:
//   dV = Pᵀ dO,  dP = dO vᵀ,  dS = P * (dP - rowsum(dP * P)) * s,  dq = dS k,  dk = dSᵀ q
// written to the columns of q, k and v in da (N, L, Ca) and db (N, L, Cb).
// Every matrix is held transposed (query index last), so the loops run along the L queries:
// a sequence of 16 words is one AVX-512 vector. The exponentials run on vector_math.h's lanes
// (glibc's vector expf, every element through the same code): a loop's own vector and scalar
// parts, where the compiler puts them by the buffers' alignment, would give an element bits that
// depend on where the heap placed them.
// (sequence, head) pairs are independent and split over the machine's threads (cpu_parallel.h).
// Built and loaded by mindspore_tnt/attention.py; float32 only (it falls back otherwise), heads int32.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "aot_kernel.h"
#include "cpu_parallel.h"
#include "vector_math.h"

namespace {

constexpr int64_t kGrainWork = 1 << 16;  // multiply-adds of q kᵀ per thread at least

// every param float32 but heads (param 3), int32
bool dtypes_ok(int nparam, const char **dtypes) {
  for (int i = 0; i < nparam; ++i) {
    if (std::strcmp(dtypes[i], i == 3 ? "int32" : "float32") != 0) return false;
  }
  return true;
}

// Where q, k and v live: column offsets and row strides in a and b.
struct Layout {
  int64_t n, len, dim, heads, head_dim, ca, cb;

  // the tensor (0: a, 1: b) and column of the first column of q (t = 0), k (1) or v (2)
  int which(int t) const { return t * dim < ca ? 0 : 1; }
  int64_t column(int t) const { return t * dim < ca ? t * dim : t * dim - ca; }
  int64_t stride(int t) const { return which(t) == 0 ? ca : cb; }
};

// (sequence, head) pairs per thread at least
int64_t grain(const Layout &lay) {
  return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, lay.len * lay.len * lay.head_dim));
}

// Layout of a (N, L, Ca), b (N, L, Cb) and heads (1 element), or false where they do not fit.
bool layout_of(int *ndims, int64_t **shapes, int64_t heads, Layout *out) {
  if (ndims[0] != 3 || ndims[1] != 3 || heads <= 0) return false;
  const int64_t n = shapes[0][0], len = shapes[0][1], ca = shapes[0][2], cb = shapes[1][2];
  if (shapes[1][0] != n || shapes[1][1] != len || (ca + cb) % 3 != 0) return false;
  const int64_t dim = (ca + cb) / 3;
  if (dim % heads != 0 || ca % dim != 0 || ca == 0 || cb == 0) return false;
  *out = Layout{n, len, dim, heads, dim / heads, ca, cb};
  return true;
}

// The kernel's first four params (a, b, scale, heads) of `expected` in all: their layout, a and b,
// and the scale; false where the count, a dtype or a shape does not fit.
bool inputs_of(int nparam, int expected, void **params, int *ndims, int64_t **shapes, const char **dtypes,
               Layout *lay, const float **in, float *scale) {
  if (nparam != expected || !dtypes_ok(nparam, dtypes) ||
      !layout_of(ndims, shapes, *static_cast<const int32_t *>(params[3]), lay))
    return false;
  in[0] = tnt_cpu::in(params, 0);
  in[1] = tnt_cpu::in(params, 1);
  *scale = *tnt_cpu::in(params, 2);
  return true;
}

// xt (d, L) = the d columns from `col` of the (L, stride) rows at x, transposed
template <int64_t kLen>
void load_t(const float *x, int64_t stride, int64_t col, int64_t len_arg, int64_t d, float *xt) {
  const int64_t len = kLen > 0 ? kLen : len_arg;
  for (int64_t c = 0; c < d; ++c) {
    const float *xc = x + col + c;
    float *xtc = xt + c * len;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) xtc[i] = xc[i * stride];
  }
}

// x's d columns from `col` of its (L, stride) rows = xt (d, L) transposed
template <int64_t kLen>
void store_t(const float *xt, int64_t len_arg, int64_t d, float *x, int64_t stride, int64_t col) {
  const int64_t len = kLen > 0 ? kLen : len_arg;
  for (int64_t c = 0; c < d; ++c) {
    float *xc = x + col + c;
    const float *xtc = xt + c * len;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) xc[i * stride] = xtc[i];
  }
}

// out[i] = sum over r < rows of a[r][i] * w[r * w_stride], for the (rows, L) rows of a, i < L
template <int64_t kLen>
inline void combine(const float *a, const float *w, int64_t w_stride, int64_t rows, int64_t len_arg, float *out) {
  const int64_t len = kLen > 0 ? kLen : len_arg;
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) out[i] = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    const float wr = w[r * w_stride];
    const float *ar = a + r * len;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) out[i] += ar[i] * wr;
  }
}

// pt (L keys, L queries) = softmax over the keys of (k qᵀ) * scale, from qt, kt (d, L)
template <int64_t kLen>
void probabilities(const float *qt, const float *kt, int64_t len_arg, int64_t d, float scale, float *pt, float *rmax,
                   float *rsum) {
  const int64_t len = kLen > 0 ? kLen : len_arg;
  for (int64_t j = 0; j < len; ++j) {
    float *s = pt + j * len;
    combine<kLen>(qt, kt + j, len, d, len, s);  // s[i] = sum_c q[i][c] k[j][c]
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) s[i] *= scale;
  }
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) rmax[i] = pt[i];
  for (int64_t j = 1; j < len; ++j) {
    const float *s = pt + j * len;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) rmax[i] = std::max(rmax[i], s[i]);
  }
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) rsum[i] = 0.0f;
  for (int64_t j = 0; j < len; ++j) {
    float *s = pt + j * len;
    const float *in[2] = {s, rmax};
    tnt_cpu::lanes<2>(len, in, s, [](const float *const *lane, float *out) {
      float t[tnt_cpu::kLanes];
#pragma omp simd
      for (int i = 0; i < tnt_cpu::kLanes; ++i) t[i] = lane[0][i] - lane[1][i];
      tnt_cpu::exp_lanes(t, out);
    });
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) rsum[i] += s[i];
  }
  for (int64_t j = 0; j < len; ++j) {
    float *s = pt + j * len;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) s[i] /= rsum[i];
  }
}

// yt (d, L) = xᵀ m for x (L rows of d, as xt (d, L)) and m (L, L): yt[c][i] = sum_j xt[c][j] m[j][i]
template <int64_t kLen>
void mul_t(const float *xt, const float *m, int64_t len_arg, int64_t d, float *yt) {
  const int64_t len = kLen > 0 ? kLen : len_arg;
  for (int64_t c = 0; c < d; ++c) combine<kLen>(m, xt + c * len, 1, len, len, yt + c * len);
}

// mt (L, L) = m transposed
template <int64_t kLen>
void transpose(const float *m, int64_t len_arg, float *mt) {
  const int64_t len = kLen > 0 ? kLen : len_arg;
  for (int64_t j = 0; j < len; ++j) {
    for (int64_t i = 0; i < len; ++i) mt[i * len + j] = m[j * len + i];
  }
}

// O of the (sequence, head) pairs s * H + h in [begin, end), for sequences of kLen (0: any) elements
template <int64_t kLen>
void forward(const Layout &lay, const float *const *in, float scale, float *out, int64_t begin, int64_t end) {
  const int64_t len = kLen > 0 ? kLen : lay.len, d = lay.head_dim;
  std::vector<float> buf(4 * d * len + len * len + 2 * len);
  float *qt = buf.data(), *kt = qt + d * len, *vt = kt + d * len, *ot = vt + d * len, *pt = ot + d * len;
  float *rmax = pt + len * len, *rsum = rmax + len;
  float *t[3] = {qt, kt, vt};
  for (int64_t pair = begin; pair < end; ++pair) {
    const int64_t s = pair / lay.heads, h = pair % lay.heads;
    for (int k = 0; k < 3; ++k) {
      load_t<kLen>(in[lay.which(k)] + s * len * lay.stride(k), lay.stride(k), lay.column(k) + h * d, len, d, t[k]);
    }
    probabilities<kLen>(qt, kt, len, d, scale, pt, rmax, rsum);
    mul_t<kLen>(vt, pt, len, d, ot);  // oᵀ[c][i] = sum_j v[j][c] P[i][j]
    store_t<kLen>(ot, len, d, out + s * len * lay.dim, lay.dim, h * d);
  }
}

// d[a, b] of the (sequence, head) pairs [begin, end), for sequences of kLen (0: any) elements
template <int64_t kLen>
void backward(const Layout &lay, const float *const *in, float scale, const float *dout, float *const *grad,
              int64_t begin, int64_t end) {
  const int64_t len = kLen > 0 ? kLen : lay.len, d = lay.head_dim;
  std::vector<float> buf(7 * d * len + 3 * len * len + 3 * len);
  float *qt = buf.data(), *kt = qt + d * len, *vt = kt + d * len, *dot = vt + d * len;
  float *dqt = dot + d * len, *dkt = dqt + d * len, *dvt = dkt + d * len;
  float *pt = dvt + d * len, *p = pt + len * len, *dst = p + len * len;
  float *rmax = dst + len * len, *rsum = rmax + len, *row = rsum + len;
  float *t[3] = {qt, kt, vt};
  const float *dt[3] = {dqt, dkt, dvt};
  for (int64_t pair = begin; pair < end; ++pair) {
    const int64_t s = pair / lay.heads, h = pair % lay.heads;
    for (int k = 0; k < 3; ++k) {
      load_t<kLen>(in[lay.which(k)] + s * len * lay.stride(k), lay.stride(k), lay.column(k) + h * d, len, d, t[k]);
    }
    load_t<kLen>(dout + s * len * lay.dim, lay.dim, h * d, len, d, dot);
    probabilities<kLen>(qt, kt, len, d, scale, pt, rmax, rsum);
    // dPᵀ[j][i] = sum_c v[j][c] dO[i][c]; row[i] = sum_j dP[i][j] P[i][j]
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) row[i] = 0.0f;
    for (int64_t j = 0; j < len; ++j) {
      float *g = dst + j * len;
      const float *pj = pt + j * len;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) g[i] = 0.0f;
      for (int64_t c = 0; c < d; ++c) {
        const float vjc = vt[c * len + j];
        const float *o = dot + c * len;
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) g[i] += vjc * o[i];
      }
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) row[i] += g[i] * pj[i];
    }
    // dSᵀ = Pᵀ * (dPᵀ - row) * scale
    for (int64_t j = 0; j < len; ++j) {
      float *g = dst + j * len;
      const float *pj = pt + j * len;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) g[i] = pj[i] * (g[i] - row[i]) * scale;
    }
    mul_t<kLen>(kt, dst, len, d, dqt);  // dqᵀ[c][i] = sum_j k[j][c] dS[i][j]
    transpose<kLen>(dst, len, p);       // p = dS
    mul_t<kLen>(qt, p, len, d, dkt);    // dkᵀ[c][j] = sum_i q[i][c] dS[i][j]
    transpose<kLen>(pt, len, p);        // p = P
    mul_t<kLen>(dot, p, len, d, dvt);   // dvᵀ[c][j] = sum_i dO[i][c] P[i][j]
    for (int k = 0; k < 3; ++k) {
      store_t<kLen>(dt[k], len, d, grad[lay.which(k)] + s * len * lay.stride(k), lay.stride(k),
                    lay.column(k) + h * d);
    }
  }
}

}  // namespace

// params: a (N, L, Ca), b (N, L, Cb), scale (1), heads (1, int32), out (N, L, D)
TNT_AOT_KERNEL(SmallHeadAttention) {
  Layout lay;
  const float *in[2];
  float scale;
  if (!inputs_of(nparam, 5, params, ndims, shapes, dtypes, &lay, in, &scale)) return 1;
  float *out = tnt_cpu::out(params, 4);
  tnt_cpu::parallel_for(lay.n * lay.heads, grain(lay), [=](int64_t begin, int64_t end) {
    if (lay.len == 16) {
      forward<16>(lay, in, scale, out, begin, end);
    } else {
      forward<0>(lay, in, scale, out, begin, end);
    }
  });
  return 0;
}

// params: a, b, scale, heads, dout (N, L, D), da (N, L, Ca), db (N, L, Cb)
TNT_AOT_KERNEL(SmallHeadAttentionGrad) {
  Layout lay;
  const float *in[2];
  float scale;
  if (!inputs_of(nparam, 7, params, ndims, shapes, dtypes, &lay, in, &scale)) return 1;
  const float *dout = tnt_cpu::in(params, 4);
  float *grad[2] = {tnt_cpu::out(params, 5), tnt_cpu::out(params, 6)};
  tnt_cpu::parallel_for(lay.n * lay.heads, grain(lay), [=](int64_t begin, int64_t end) {
    if (lay.len == 16) {
      backward<16>(lay, in, scale, dout, grad, begin, end);
    } else {
      backward<0>(lay, in, scale, dout, grad, begin, end);
    }
  });
  return 0;
}
