// Drop path's scaling, y = x / keep * mask[row], and its gradient for MindSpore's CPU backend,
// as AOT custom-op kernels.
//
// x is (rows, ...) and mask (rows, 1, ...): each sample's row is kept (mask 1) or zeroed
// (mask 0). The forward is the two ops of mindspore_tnt.tnt.DropPath, x / keep then * mask,
// and the gradient what autodiff makes of them, (dy * mask) / keep: the same float operations
// in the same order, so the results are bit-identical. As two broadcasting MindSpore ops the
// training step held about 1.6 GB more at TNT-S batch 8 (docs/performance.md, Training memory).
// Built and loaded by mindspore_tnt/droppath.py; float32 only (it falls back otherwise).
#include <cstdint>

#include "aot_kernel.h"
#include "cpu_parallel.h"

namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per thread at least

// out[i] = in[i] / keep * mask[row] (forward) or in[i] * mask[row] / keep (gradient).
template <bool kGrad>
int scale_rows(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 4 || !tnt_cpu::all_float32(nparam, dtypes)) return 1;
  const float *in = tnt_cpu::in(params, 0), *mask = tnt_cpu::in(params, 1);
  const float keep = *tnt_cpu::in(params, 2);
  float *out = tnt_cpu::out(params, 3);
  const int64_t n = tnt_cpu::numel(ndims[0], shapes[0]);
  const int64_t rows = tnt_cpu::numel(ndims[1], shapes[1]);
  if (rows <= 0 || n % rows != 0) return 1;
  const int64_t width = n / rows;
  tnt_cpu::parallel_for(n, kGrain, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t row = i / width;
      const int64_t stop = (row + 1) * width < end ? (row + 1) * width : end;
      const float m = mask[row];
#pragma omp simd
      for (int64_t j = i; j < stop; ++j) {
        out[j] = kGrad ? in[j] * m / keep : in[j] / keep * m;
      }
      i = stop;
    }
  });
  return 0;
}

}  // namespace

// params: x, mask, keep (1 element), y
TNT_AOT_KERNEL(DropPathScale) {
  return scale_rows<false>(nparam, params, ndims, shapes, dtypes);
}

// params: dy, mask, keep (1 element), dx
TNT_AOT_KERNEL(DropPathScaleGrad) {
  return scale_rows<true>(nparam, params, ndims, shapes, dtypes);
}
