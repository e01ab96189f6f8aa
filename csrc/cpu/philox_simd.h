// Philox4x32-10 on 16 (AVX-512) or 8 (AVX2) counters at a time with explicit
// intrinsics: compilers vectorize the 32x32->64 multiplies of philox.h poorly.
// Writes the two uniforms [0, 1) that Box-Muller takes, for counters base .. base+n-1.
#pragma once
#include <cstdint>

#include "../philox.h"

#if defined(__AVX2__)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's own avx512fintrin.h
#endif
#include <immintrin.h>
#endif

namespace mridpm {

struct PhiloxKeys {
  std::uint32_t k0[10], k1[10];
  explicit PhiloxKeys(std::uint64_t seed) {
    std::uint32_t a = static_cast<std::uint32_t>(seed), b = static_cast<std::uint32_t>(seed >> 32);
    for (int r = 0; r < 10; ++r, a += 0x9E3779B9u, b += 0xBB67AE85u) {
      k0[r] = a;
      k1[r] = b;
    }
  }
};

#if defined(__AVX512F__)
constexpr int kPhiloxLanes = 16;
using VecI = __m512i;
static inline VecI vset(std::uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
static inline VecI viota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
static inline VecI vadd(VecI a, VecI b) { return _mm512_add_epi32(a, b); }
// hi word of the product in even/odd lanes; odd lanes take the second operand.
static inline VecI vodd(VecI even, VecI odd) { return _mm512_mask_blend_epi32(0xAAAA, even, odd); }
static inline VecI vmul_even(VecI a, VecI b) { return _mm512_mul_epu32(a, b); }
static inline VecI vswap(VecI a) { return _mm512_shuffle_epi32(a, _MM_PERM_CDAB); }  // swap 32-bit pairs
static inline VecI vxor3(VecI a, VecI b, VecI c) { return _mm512_ternarylogic_epi32(a, b, c, 0x96); }
static inline VecI vcarry(VecI lo, VecI start) {  // 1 where lo < start (unsigned), else 0
  return _mm512_maskz_mov_epi32(_mm512_cmplt_epu32_mask(lo, start), vset(1));
}
static inline void vstore_uniform(float* dst, VecI w) {
  const VecI folded = _mm512_xor_si512(w, _mm512_srai_epi32(w, 31));  // x < 0 ? ~x : x
  _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_cvtepi32_ps(folded), _mm512_set1_ps(4.6566127342e-10f)));
}
#elif defined(__AVX2__)
constexpr int kPhiloxLanes = 8;
using VecI = __m256i;
static inline VecI vset(std::uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
static inline VecI viota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
static inline VecI vadd(VecI a, VecI b) { return _mm256_add_epi32(a, b); }
static inline VecI vodd(VecI even, VecI odd) { return _mm256_blend_epi32(even, odd, 0xAA); }
static inline VecI vmul_even(VecI a, VecI b) { return _mm256_mul_epu32(a, b); }
static inline VecI vswap(VecI a) { return _mm256_shuffle_epi32(a, 0xB1); }
static inline VecI vxor3(VecI a, VecI b, VecI c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
static inline VecI vcarry(VecI lo, VecI start) {
  const VecI flip = vset(0x80000000u);
  const VecI less = _mm256_cmpgt_epi32(_mm256_xor_si256(start, flip), _mm256_xor_si256(lo, flip));
  return _mm256_and_si256(less, vset(1));
}
static inline void vstore_uniform(float* dst, VecI w) {
  const VecI folded = _mm256_xor_si256(w, _mm256_srai_epi32(w, 31));
  _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtepi32_ps(folded), _mm256_set1_ps(4.6566127342e-10f)));
}
#endif

// u1[j], u2[j] = uniforms of the first two Philox words for counter base + j; n < 2^31.
static inline void philox_uniforms(std::uint64_t seed, std::uint64_t base, std::int64_t n, float* u1, float* u2) {
  std::int64_t j = 0;
#if defined(__AVX2__)
  const PhiloxKeys keys(seed);
  const VecI A = vset(0xD2511F53u), B = vset(0xCD9E8D57u), zero = vset(0);
  const std::uint32_t lo0 = static_cast<std::uint32_t>(base), hi0 = static_cast<std::uint32_t>(base >> 32);
  const VecI start = vset(lo0), iota = viota();
  for (; j + kPhiloxLanes <= n; j += kPhiloxLanes) {
    VecI c0 = vadd(vset(lo0 + static_cast<std::uint32_t>(j)), iota);
    VecI c1 = vadd(vset(hi0), vcarry(c0, start));
    VecI c2 = zero, c3 = zero;
    for (int r = 0; r < 10; ++r) {
      // 64-bit products of the even lanes and of the odd lanes (swapped into even slots)
      const VecI pe_b = vmul_even(c2, B), po_b = vmul_even(vswap(c2), B);
      const VecI pe_a = vmul_even(c0, A), po_a = vmul_even(vswap(c0), A);
      c0 = vxor3(vodd(vswap(pe_b), po_b), c1, vset(keys.k0[r]));  // high words
      c2 = vxor3(vodd(vswap(pe_a), po_a), c3, vset(keys.k1[r]));
      c1 = vodd(pe_b, vswap(po_b));  // low words
      c3 = vodd(pe_a, vswap(po_a));
    }
    vstore_uniform(u1 + j, c0);
    vstore_uniform(u2 + j, c1);
  }
#endif
  for (; j < n; ++j) {
    const Words2 w = philox_2x(seed, base + static_cast<std::uint64_t>(j));
    u1[j] = uint_to_uniform(w.a);
    u2[j] = uint_to_uniform(w.b);
  }
}

}  // namespace mridpm
