// Argument checks shared by the AOT custom-op kernels (MindSpore passes every input and output
// as params[i] with its ndims[i], shapes[i] and dtypes[i]).
#pragma once

#include <cstdint>
#include <cstring>

namespace tnt_cpu {

inline bool all_float32(int nparam, const char **dtypes) {
  for (int i = 0; i < nparam; ++i) {
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  }
  return true;
}

inline int64_t numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

}  // namespace tnt_cpu
