// Fused data-consistency kernels on complex64 data (float pairs), contiguous buffers:
//   expand:  out[b,c,i] = g(i) * maps[b',c,i] * x[b,i]                          (B, C, N)
//   blend:   out[b,c,i] = a * k[b,c,i] + lam * m[b'',c'',i] * (ys * g(i) * y[b,c,i] - k[b,c,i])
//   combine: out[b,i]   = g(i) * sum_c conj(maps[b',c,i]) * k[b,c,i]             (B, N)
// with b' = b or 0 (maps shared), b'' and c'' likewise for the real mask, and g(i) the
// checkerboard (-1)^(sum of the spatial indices of i) (when kSign) or 1. Around an unshifted
// orthonormal FFT, g folds the centered FFT's shifts for even sizes (see mri/fft.py).
#pragma once
#include <cstdint>

#include "common.h"

namespace mridpm {

enum DcOp : int { kExpand = 0, kBlend = 1, kCombine = 2 };
enum DcFlags : int { kSign = 1 };
constexpr int kDcMaxDims = 8;

struct DcArgs {
  int op = kExpand;
  int flags = 0;
  int nthreads = 1;
  std::int64_t batch = 0, coils = 0, n = 0;  // n = D * H * W
  std::int64_t h = 1, w = 1;                 // the last two spatial sizes (the CPU kernel's lines)
  std::int64_t maps_batch = 1, mask_batch = 1, mask_coils = 1;
  // The spatial sizes the sign splits i into, outermost first, reduced by dc_sign_dims (ndim 0: not set).
  int ndim = 0;
  std::int64_t dims[kDcMaxDims] = {};
  Buffer x, maps, k, y, mask, out;  // capacities in floats; batch_stride unused
  float a = 1.0f, lam = 1.0f, ysign = 1.0f;
};

// (-1)^(sum of the spatial indices of flat index i), or 1 without kSign. Every backend and the
// reference agree for any number of spatial dimensions (issue 19: the leading indices were flattened
// into one, wrong from 4 dimensions on when a non-last size is even).
MRIDPM_HD float dc_sign(const DcArgs& a, std::int64_t i) {
  if (!(a.flags & kSign)) return 1.0f;
  std::int64_t parity = 0;
  for (int j = a.ndim - 1; j > 0; --j) {
    parity += i % a.dims[j];
    i /= a.dims[j];
  }
  return ((parity + i) & 1) ? -1.0f : 1.0f;
}

// Sets a.dims from the spatial sizes (outermost first; none: (n / (h w), h, w)), reduced without changing
// the sign: sizes 1 dropped, and a dimension before an odd one merged into it (outer * odd + index has
// the parity of outer + index), so every kept size but the first is even. check_dc validates the result.
inline void dc_sign_dims(DcArgs& a, const std::int64_t* spatial, int count) {
  std::int64_t legacy[3] = {0, a.h, a.w};
  if (count == 0) {
    std::int64_t hw = 0;
    if (a.h < 1 || a.w < 1 || a.n < 1 || !checked_mul(a.h, a.w, &hw) || a.n % hw != 0) return;  // check_dc refuses
    legacy[0] = a.n / hw;
    spatial = legacy;
    count = 3;
  }
  a.ndim = 0;
  for (int j = 0; j < count; ++j) {
    std::int64_t s = spatial[j];
    if (s < 1) {  // refused by check_dc
      a.ndim = -1;
      return;
    }
    if (s == 1) continue;
    if ((s & 1) && a.ndim > 0 && checked_mul(a.dims[a.ndim - 1], s, &s)) --a.ndim;
    if (a.ndim == kDcMaxDims) {
      a.ndim = -1;
      return;
    }
    a.dims[a.ndim++] = s;
  }
  if (a.ndim == 0) a.dims[a.ndim++] = 1;
}

// True when the buffer holds count1 * count2 * count3 * n complex values (2 floats each), without overflow.
inline bool dc_holds(const Buffer& b, std::int64_t count1, std::int64_t count2, std::int64_t n) {
  std::int64_t p = 0;
  if (!checked_mul(count1, count2, &p) || !checked_mul(p, n, &p) || !checked_mul(p, 2, &p)) return false;
  return b.ptr != 0 && b.capacity >= p;
}

// Checks every size and extent the kernels will use; kOk when the call is safe.
inline int check_dc(const DcArgs& a) {
  if (a.op < kExpand || a.op > kCombine) return kBadFlags;
  if ((a.flags & ~kSign) != 0) return kBadFlags;
  if (a.batch < 0 || a.coils < 0 || a.n < 0 || a.h < 1 || a.w < 1) return kBadShape;
  if (a.maps_batch < 1 || a.mask_batch < 1 || a.mask_coils < 1) return kBadShape;
  if (a.batch == 0 || a.coils == 0 || a.n == 0) return kOk;
  if (a.flags & kSign) {
    std::int64_t hw = 0;  // h * w must divide n, so it cannot exceed it
    if (!checked_mul(a.h, a.w, &hw) || hw > a.n || a.n % hw != 0) return kBadShape;
    std::int64_t prod = 1;
    if (a.ndim < 1 || a.ndim > kDcMaxDims) return kBadSignShape;
    for (int j = 0; j < a.ndim; ++j)
      if (a.dims[j] < 1 || !checked_mul(prod, a.dims[j], &prod)) return kBadSignShape;
    if (prod != a.n) return kBadSignShape;
  }
  // the kernels index up to 2 * batch * coils * n floats: keep 4 * batch * coils * n within int64
  std::int64_t total = 0;
  if (!checked_mul(a.batch, a.coils, &total) || !checked_mul(total, a.n, &total) || total > INT64_MAX / 4)
    return kOutOfBounds;
  if (a.op != kBlend) {
    if (a.maps_batch != 1 && a.maps_batch != a.batch) return kBadShape;
    if (!dc_holds(a.maps, a.maps_batch, a.coils, a.n)) return kOutOfBounds;
  }
  switch (a.op) {
    case kExpand:
      return dc_holds(a.x, a.batch, 1, a.n) && dc_holds(a.out, a.batch, a.coils, a.n) ? kOk : kOutOfBounds;
    case kCombine:
      return dc_holds(a.k, a.batch, a.coils, a.n) && dc_holds(a.out, a.batch, 1, a.n) ? kOk : kOutOfBounds;
    default: {
      if ((a.mask_batch != 1 && a.mask_batch != a.batch) || (a.mask_coils != 1 && a.mask_coils != a.coils))
        return kBadShape;
      std::int64_t mask_floats = 0;  // the mask is real: one float per element
      if (!checked_mul(a.mask_batch, a.mask_coils, &mask_floats) || !checked_mul(mask_floats, a.n, &mask_floats) ||
          a.mask.ptr == 0 || a.mask.capacity < mask_floats)
        return kOutOfBounds;
      return dc_holds(a.k, a.batch, a.coils, a.n) && dc_holds(a.y, a.batch, a.coils, a.n) &&
                     dc_holds(a.out, a.batch, a.coils, a.n)
                 ? kOk
                 : kOutOfBounds;
    }
  }
}

int dc_cpu(const DcArgs& a);
int dc_cuda(const DcArgs& a, std::uintptr_t stream);

}  // namespace mridpm
