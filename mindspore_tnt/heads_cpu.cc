// Attention heads moved between the rows of a projection and the (batch, head) matrices of a
// batched matmul, for MindSpore's CPU backend, as AOT custom-op kernels:
//   SwapAxes12:  x (B, L, H, d) -> y (B, H, L, d), y[b, h, l] = x[b, l, h] (its own inverse);
//   SplitHeads2: x (B, L, 2 H, d) -> q, k (B, H, L, d), q[b, h, l] = x[b, l, h], k[b, h, l] = x[b, l, H + h];
//   MergeHeads2: q, k -> x, the inverse of SplitHeads2 (its gradient).
// The transposes (and unstack) they replace, as copies of the d contiguous floats of each head
// row: the same bits. Rows are split over the machine's threads (cpu_parallel.h). Built and
// loaded by mindspore_tnt/heads.py; float32 only.
#include <cstdint>
#include <cstring>

#include "aot_kernel.h"
#include "cpu_parallel.h"

namespace {

constexpr int64_t kGrain = 1 << 14;  // floats moved per thread at least

struct Shape {
  int64_t batch, len, heads, dim, parts;
};

// x (B, L, P H, d) at param `x_at`, P = nparam - 1 tensors (B, H, L, d) at the others
bool shape_of(int nparam, int x_at, const int *ndims, int64_t *const *shapes, const char **dtypes, Shape *s) {
  if (nparam < 2 || !tnt_cpu::all_float32(nparam, dtypes) || ndims[x_at] != 4) return false;
  const int64_t *x = shapes[x_at];
  *s = Shape{x[0], x[1], x[2] / (nparam - 1), x[3], nparam - 1};
  for (int i = 0; i < nparam; ++i) {
    if (i != x_at && (ndims[i] != 4 || shapes[i][0] != s->batch || shapes[i][1] != s->heads ||
                      shapes[i][2] != s->len || shapes[i][3] != s->dim))
      return false;
  }
  return s->heads > 0 && s->dim > 0 && s->parts * s->heads == x[2];
}

// For each row (b, l) of x and each head column block k = p H + h: copy d floats between
// x[b, l, k d] and y_p[b, h, l] (to y with `split`, else to x).
void move(const Shape &s, float *x, float *const *ys, bool split) {
  const int64_t blocks = s.parts * s.heads, row = blocks * s.dim;
  tnt_cpu::parallel_for(s.batch * s.len, kGrain / row + 1, [=](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / s.len, l = r % s.len;
      for (int64_t k = 0; k < blocks; ++k) {
        float *xk = x + r * row + k * s.dim;
        float *yk = ys[k / s.heads] + ((b * s.heads + k % s.heads) * s.len + l) * s.dim;
        std::memcpy(split ? yk : xk, split ? xk : yk, s.dim * sizeof(float));
      }
    }
  });
}

}  // namespace

// params: x (B, L, H, d), y (B, H, L, d)
TNT_AOT_KERNEL(SwapAxes12) {
  Shape s;
  if (!shape_of(nparam, 0, ndims, shapes, dtypes, &s) || s.parts != 1) return 1;
  float *y = tnt_cpu::out(params, 1);
  move(s, const_cast<float *>(tnt_cpu::in(params, 0)), &y, true);
  return 0;
}

// params: x (B, L, 2 H, d), q (B, H, L, d), k (B, H, L, d)
TNT_AOT_KERNEL(SplitHeads2) {
  Shape s;
  if (!shape_of(nparam, 0, ndims, shapes, dtypes, &s) || s.parts != 2) return 1;
  float *ys[2] = {tnt_cpu::out(params, 1), tnt_cpu::out(params, 2)};
  move(s, const_cast<float *>(tnt_cpu::in(params, 0)), ys, true);
  return 0;
}

// params: q (B, H, L, d), k (B, H, L, d), x (B, L, 2 H, d)
TNT_AOT_KERNEL(MergeHeads2) {
  Shape s;
  if (!shape_of(nparam, 2, ndims, shapes, dtypes, &s) || s.parts != 2) return 1;
  float *ys[2] = {const_cast<float *>(tnt_cpu::in(params, 0)), const_cast<float *>(tnt_cpu::in(params, 1))};
  move(s, tnt_cpu::out(params, 2), ys, false);
  return 0;
}
