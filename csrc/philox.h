// Counter-based noise shared by host and device code: element i of a draw uses
// Philox4x32-10 on counter (lo32(offset+i), hi32(offset+i), 0, 0) with key
// (lo32(seed), hi32(seed)), then Box-Muller on the first two words, exactly as
// Triton's tl.randn(seed, offset) computes it.
#pragma once
#include <math.h>

#include <cstdint>

#include "common.h"

namespace mridpm {

struct Words2 {
  std::uint32_t a, b;
};

MRIDPM_HD std::uint32_t mulhilo(std::uint32_t x, std::uint32_t y, std::uint32_t* hi) {
  const std::uint64_t p = static_cast<std::uint64_t>(x) * y;
  *hi = static_cast<std::uint32_t>(p >> 32);
  return static_cast<std::uint32_t>(p);
}

// First two output words of Philox4x32-10.
MRIDPM_HD Words2 philox_2x(std::uint64_t seed, std::uint64_t counter) {
  std::uint32_t c0 = static_cast<std::uint32_t>(counter), c1 = static_cast<std::uint32_t>(counter >> 32);
  std::uint32_t c2 = 0, c3 = 0;
  std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
#if defined(__CUDACC__) || defined(__clang__)
#pragma unroll
#elif defined(__GNUC__)
#pragma GCC unroll 10
#endif
  for (int r = 0; r < 10; ++r) {
    std::uint32_t hi_b, hi_a;
    const std::uint32_t lo_b = mulhilo(0xCD9E8D57u, c2, &hi_b);
    const std::uint32_t lo_a = mulhilo(0xD2511F53u, c0, &hi_a);
    c0 = hi_b ^ c1 ^ k0;
    c2 = hi_a ^ c3 ^ k1;
    c1 = lo_b;
    c3 = lo_a;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1};
}

// Triton's uint_to_uniform_float for 32-bit words: a float in [0, 1).
MRIDPM_HD float uint_to_uniform(std::uint32_t w) {
  const std::int32_t x = static_cast<std::int32_t>(w);
  const std::int32_t pos = x < 0 ? ~x : x;
  return static_cast<float>(pos) * 4.6566127342e-10f;
}

// The normal of counter `counter`: Box-Muller on the first two words (the GPU kernels' scalar path;
// the CPU kernels use the vectorized one of cpu/vmath.h).
MRIDPM_HD float philox_normal(std::uint64_t seed, std::uint64_t counter) {
  const Words2 w = philox_2x(seed, counter);
  const float u1 = fmaxf(1.0e-7f, uint_to_uniform(w.a));
  const float th = 6.283185307179586f * uint_to_uniform(w.b);
  return sqrtf(-2.0f * logf(u1)) * cosf(th);
}

}  // namespace mridpm
