// Branch-free float32 log and cos (Cephes polynomials, about 1 ulp) that the
// compiler vectorizes, plus the Box-Muller normal of philox.h built on them.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../philox.h"

namespace mridpm {

// log(x) for finite x > 0 in the normal range.
static inline float vlog(float x) {
  const std::uint32_t u = f32_bits(x);
  std::int32_t e = static_cast<std::int32_t>(u >> 23) - 126;
  const float m = bits_f32((u & 0x007fffffu) | 0x3f000000u);  // x = m * 2^e, m in [0.5, 1)
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1 : e;
  const float f = low ? (m + m - 1.0f) : (m - 1.0f);
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  const float ef = static_cast<float>(e);
  y += -2.12194440e-4f * ef;
  y += -0.5f * z;
  return (f + y) + 0.693359375f * ef;
}

// cos(x) for 0 <= x <= 8.
static inline float vcos(float x) {
  std::int32_t j = static_cast<std::int32_t>(x * 1.27323954473516f);
  j = (j + 1) & ~1;
  const float y = static_cast<float>(j);
  const float r = ((x - y * 0.78515625f) - y * 2.4187564849853515625e-4f) - y * 3.77489497744594108e-8f;
  const float z = r * r;
  const float c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z - 0.5f * z + 1.0f;
  const float s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
  const std::int32_t q = (j >> 1) & 3;  // x = r + q * pi / 2
  const float v = (q & 1) ? s : c;
  return (q == 1 || q == 2) ? -v : v;
}

// Normals for counters base .. base+n-1 into z. Two loops, because the compiler
// vectorizes each half but gives up on the fused body.
static inline void philox_normals(std::uint64_t seed, std::uint64_t base, std::int64_t n, float* u1, float* z) {
  for (std::int64_t j = 0; j < n; ++j) {
    const Words2 w = philox_2x(seed, base + static_cast<std::uint64_t>(j));
    u1[j] = uint_to_uniform(w.a);
    z[j] = uint_to_uniform(w.b);
  }
  for (std::int64_t j = 0; j < n; ++j)
    z[j] = std::sqrt(-2.0f * vlog(std::max(1.0e-7f, u1[j]))) * vcos(6.283185307179586f * z[j]);
}

}  // namespace mridpm
