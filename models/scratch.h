// Grow-only f32 scratch buffers for the forward passes: sized on first use (or when a
// larger batch arrives) and reused afterwards, so steady-state decode never allocates.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/aligned_buffer.h"

namespace recap::models {

class FloatScratch {
 public:
  // A buffer of at least n floats (64-byte aligned). Contents are unspecified; pointers
  // returned earlier are invalidated only when the buffer has to grow.
  float* get(int64_t n) {
    const size_t bytes = static_cast<size_t>(n > 0 ? n : 1) * sizeof(float);
    if (buf_.size() < bytes) buf_.allocate(bytes);
    return buf_.as<float>();
  }

 private:
  kernels::AlignedBuffer buf_;
};

}  // namespace recap::models
