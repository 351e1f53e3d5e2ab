// The AOT custom-op kernels' signature and the argument checks they share.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>

// A kernel as MindSpore's AOT custom ops call it: every input then output as params[i], with its
// ndims[i], shapes[i] and dtypes[i]; 0 on success.
#define TNT_AOT_KERNEL(name) \
  extern "C" int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, \
                      void *extra)

namespace tnt_cpu {

inline bool all_float32(int nparam, const char **dtypes) {
  for (int i = 0; i < nparam; ++i) {
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  }
  return true;
}

// params[i] as float32 input or output data.
inline const float *in(void **params, int i) { return static_cast<const float *>(params[i]); }
inline float *out(void **params, int i) { return static_cast<float *>(params[i]); }

inline int64_t numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

// Input 0 (..., n) as rows of n, each of `vectors` (inputs) holding n elements: false where
// input 0 has no axis, n is 0 or a vector's size is not n.
inline bool last_axis(const int *ndims, int64_t *const *shapes, std::initializer_list<int> vectors, int64_t *n,
                      int64_t *rows) {
  if (ndims[0] < 1 || (*n = shapes[0][ndims[0] - 1]) <= 0) return false;
  for (int v : vectors) {
    if (numel(ndims[v], shapes[v]) != *n) return false;
  }
  *rows = numel(ndims[0], shapes[0]) / *n;
  return true;
}

// `expected` float32 params, input 0 as rows of n with `vectors` of n (last_axis).
inline bool float32_rows(int nparam, int expected, const char **dtypes, const int *ndims, int64_t *const *shapes,
                         std::initializer_list<int> vectors, int64_t *n, int64_t *rows) {
  return nparam == expected && all_float32(nparam, dtypes) && last_axis(ndims, shapes, vectors, n, rows);
}

}  // namespace tnt_cpu
