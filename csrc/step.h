// The fused sampler step: for every sample b and element i,
//   x0[b,i]  = m[b] * clamp(sum_k a[b,k] v_k[b,i], lo[b], hi[b])      (when kHasX0)
//   out[b,i] = sum_k c[b,k] v_k[b,i] + w[b] x0[b,i] + s[b] z(offset + b*inner + i)
// with z the Philox normal of philox.h. Each params row holds c[K], a[K], w, lo, hi, m, s.
#pragma once
#include <cstdint>

#include "common.h"

namespace mridpm {

enum StepFlags : int { kHasX0 = 1, kClamp = 2, kWriteX0 = 4, kNoise = 8, kAllStepFlags = 15 };

constexpr int step_params(int K) { return 2 * K + 5; }
constexpr int kMaxStepParams = step_params(4);

struct StepArgs {
  int dtype = kFloat32;
  int K = 1;
  int flags = 0;
  int nthreads = 1;
  std::int64_t batch = 0;
  std::int64_t inner = 0;
  Buffer out, x0, in[4];
  bool shared_rows = false;  // inputs may repeat rows (batch stride below inner, 0 when expanded): read only
  Buffer params;  // float32; batch_stride 0 broadcasts one row to every sample
  // One row shared by every sample, passed by value instead of params: no host-to-device copy.
  bool has_uniform = false;
  float uniform[kMaxStepParams] = {};
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
  // Optional int64 {seed, base offset} in device memory, read when the kernel runs (the noise of a
  // CUDA graph replay follows the generator): the seed replaces `seed`, the base adds to `offset`.
  Buffer rng;
};

// The (seed, offset) a kernel draws from: the call's, or those read from a.rng at run time.
MRIDPM_HD void step_rng(const StepArgs& a, std::uint64_t* seed, std::uint64_t* offset) {
  *seed = a.seed;
  *offset = a.offset;
  if (a.rng.ptr != 0) {
    const auto* r = reinterpret_cast<const std::int64_t*>(a.rng.ptr);
    *seed = static_cast<std::uint64_t>(ld(r));
    *offset += static_cast<std::uint64_t>(ld(r + 1));
  }
}

// The params row of sample b.
MRIDPM_HD const float* step_row(const StepArgs& a, std::int64_t b) {
  return a.has_uniform ? a.uniform : reinterpret_cast<const float*>(a.params.ptr) + b * a.params.batch_stride;
}

// Value j of a params row from step_row: the uniform row is the argument struct itself, a table row is memory.
MRIDPM_HD float step_param(const StepArgs& a, const float* row, int j) { return a.has_uniform ? row[j] : ld(row + j); }

// kOk when an output of batch rows of inner elements fits its buffer; rows that would overlap are refused
// with their own status (an expanded output would write one element from many threads).
inline int output_status(const Buffer& buf, std::int64_t batch, std::int64_t inner) {
  if (fits(buf, batch, inner)) return kOk;
  const bool overlapping = buf.ptr != 0 && batch > 1 && buf.batch_stride >= 0 && buf.batch_stride < inner;
  return overlapping ? kOverlappingOutput : kOutOfBounds;
}

// Checks every size and extent the kernels will use; kOk when the call is safe.
inline int check_step(const StepArgs& a) {
  if (a.dtype != kFloat32 && a.dtype != kFloat16 && a.dtype != kBFloat16) return kBadDType;
  if (a.K < 1 || a.K > 4) return kBadCount;
  if ((a.flags & ~kAllStepFlags) != 0) return kBadFlags;
  if ((a.flags & kWriteX0) && !(a.flags & kHasX0)) return kBadFlags;
  if (a.batch < 0 || a.inner < 0) return kBadShape;
  if (a.batch == 0 || a.inner == 0) return kOk;
  if (a.out.ptr == 0 || (!a.has_uniform && a.params.ptr == 0)) return kNullPointer;
  if (const int s = output_status(a.out, a.batch, a.inner); s != kOk) return s;
  if (a.flags & kWriteX0)
    if (const int s = output_status(a.x0, a.batch, a.inner); s != kOk) return s;
  for (int k = 0; k < a.K; ++k)
    if (!fits(a.in[k], a.batch, a.inner, a.shared_rows)) return kOutOfBounds;
  const std::int64_t P = step_params(a.K);
  Buffer p = a.params;
  if (a.has_uniform) {
    // the row lives in the struct
  } else if (p.batch_stride == 0) {
    if (p.capacity < P) return kOutOfBounds;
  } else if (!fits(p, a.batch, P)) {
    return kOutOfBounds;
  }
  if (a.rng.ptr != 0 && a.rng.capacity < 2) return kOutOfBounds;
  std::int64_t count = 0;  // noise counters offset .. offset + batch * inner - 1 must not wrap
  if (!checked_mul(a.batch, a.inner, &count)) return kOutOfBounds;
  if (a.offset > UINT64_MAX - static_cast<std::uint64_t>(count)) return kOutOfBounds;
  return kOk;
}

int step_cpu(const StepArgs& a);
int step_cuda(const StepArgs& a, std::uintptr_t stream);

}  // namespace mridpm
