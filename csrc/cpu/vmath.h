// Box-Muller normals on the CPU: float32 log and cos from Cephes polynomials (about
// 1 ulp) written on GCC/Clang vector types, so every instruction set gets SIMD code
// without relying on the auto-vectorizer's if-conversion.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../philox.h"
#include "philox_simd.h"

namespace mridpm {

// One native vector: wider generic vectors get split badly by GCC.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX2__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif
typedef float VF __attribute__((vector_size(4 * kLanes)));
typedef std::int32_t VI __attribute__((vector_size(4 * kLanes)));
typedef std::uint32_t VU __attribute__((vector_size(4 * kLanes)));

// log(x) for finite x > 0 in the normal range.
__attribute__((always_inline)) static inline VF vlog(VF x) {
  const VU u = (VU)x;  // vector casts reinterpret bits
  VI e = (VI)(u >> 23) - 126;
  const VU mu = (u & 0x007fffffu) | 0x3f000000u;
  const VF m = (VF)mu;  // x = m * 2^e, m in [0.5, 1)
  const VI low = m < 0.707106781186547524f;      // -1 where true
  e += low;
  const VF f = low ? (m + m - 1.0f) : (m - 1.0f);
  const VF z = f * f;
  VF y = 7.0376836292e-2f * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  const VF ef = __builtin_convertvector(e, VF);
  y += -2.12194440e-4f * ef;
  y += -0.5f * z;
  return (f + y) + 0.693359375f * ef;
}

// cos(x) for 0 <= x <= 8: Cody-Waite reduction by pi/2, then the sin or cos polynomial.
__attribute__((always_inline)) static inline VF vcos(VF x) {
  VI j = __builtin_convertvector(x * 1.27323954473516f, VI);
  j = (j + 1) & ~1;
  const VF y = __builtin_convertvector(j, VF);
  const VF r = ((x - y * 0.78515625f) - y * 2.4187564849853515625e-4f) - y * 3.77489497744594108e-8f;
  const VF z = r * r;
  const VF c = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z - 0.5f * z + 1.0f;
  const VF s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
  const VI q = (j >> 1) & 3;  // x = r + q * pi / 2
  const VF v = (q & 1) != 0 ? s : c;
  return (VF)((VU)v ^ ((VU)((q + 1) & 2) << 30));  // negate for q = 1, 2
}

// Normals for counters base .. base+n-1 into z; u1 is scratch. Both hold n rounded up to kLanes.
static inline void philox_normals(std::uint64_t seed, std::uint64_t base, std::int64_t n, float* u1, float* z) {
  philox_uniforms(seed, base, n, u1, z);
  for (std::int64_t j = n; j % kLanes != 0; ++j) u1[j] = z[j] = 0.5f;  // pad the last vector
  for (std::int64_t j = 0; j < n; j += kLanes) {
    VF a, b;
    std::memcpy(&a, u1 + j, sizeof(VF));
    std::memcpy(&b, z + j, sizeof(VF));
    a = -2.0f * vlog(a < 1.0e-7f ? 1.0e-7f : a);
    b = vcos(6.283185307179586f * b);
    std::memcpy(u1 + j, &a, sizeof(VF));
    std::memcpy(z + j, &b, sizeof(VF));
  }
  for (std::int64_t j = 0; j < n; ++j) z[j] = std::sqrt(u1[j]) * z[j];
}

}  // namespace mridpm
