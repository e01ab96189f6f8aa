// CPU data-consistency kernels. Work goes line by line (W elements of one spatial row): the
// checkerboard sign of a line is computed once (dc.h dc_sign, shared with the GPU kernels) and
// alternates along it, so the inner loops are plain enough to vectorize. OpenMP across (sample,
// coil, line block) tasks.
#include <algorithm>

#include "../dc.h"
#include "threads.h"

namespace mridpm {
namespace {

// The sign of the line that starts at flat index i0 (its first element; constant 1 without kSign).
inline float line_sign(const DcArgs& a, std::int64_t i0) { return dc_sign(a, i0); }

inline float alt(const DcArgs& a, float s, std::int64_t w) {
  return (a.flags & kSign) && (w & 1) ? -s : s;
}

void expand_span(const DcArgs& a, std::int64_t b, std::int64_t c, std::int64_t i0, std::int64_t i1) {
  const float* x = reinterpret_cast<const float*>(a.x.ptr) + 2 * b * a.n;
  const float* s = reinterpret_cast<const float*>(a.maps.ptr) + 2 * ((a.maps_batch == 1 ? 0 : b) * a.coils + c) * a.n;
  float* o = reinterpret_cast<float*>(a.out.ptr) + 2 * (b * a.coils + c) * a.n;
  for (std::int64_t l0 = i0; l0 < i1; l0 += a.w) {
    const float sl = line_sign(a, l0);
    for (std::int64_t j = 0; j < a.w; ++j) {
      const std::int64_t i = 2 * (l0 + j);
      const float g = alt(a, sl, j);
      o[i] = g * (s[i] * x[i] - s[i + 1] * x[i + 1]);
      o[i + 1] = g * (s[i] * x[i + 1] + s[i + 1] * x[i]);
    }
  }
}

void blend_span(const DcArgs& a, std::int64_t b, std::int64_t c, std::int64_t i0, std::int64_t i1) {
  const std::int64_t row = 2 * (b * a.coils + c) * a.n;
  const float* k = reinterpret_cast<const float*>(a.k.ptr) + row;
  const float* y = reinterpret_cast<const float*>(a.y.ptr) + row;
  const float* m = reinterpret_cast<const float*>(a.mask.ptr) +
                   ((a.mask_batch == 1 ? 0 : b) * a.mask_coils + (a.mask_coils == 1 ? 0 : c)) * a.n;
  float* o = reinterpret_cast<float*>(a.out.ptr) + row;
  for (std::int64_t l0 = i0; l0 < i1; l0 += a.w) {
    const float sl = a.ysign * line_sign(a, l0);
    for (std::int64_t j = 0; j < a.w; ++j) {
      const std::int64_t e = l0 + j, i = 2 * e;
      const float t = a.lam * m[e], gy = alt(a, sl, j);
      o[i] = a.a * k[i] + t * (gy * y[i] - k[i]);
      o[i + 1] = a.a * k[i + 1] + t * (gy * y[i + 1] - k[i + 1]);
    }
  }
}

// out = sign * sum_c conj(s_c) k_c over a span of whole lines, coils summed in order.
void combine_span(const DcArgs& a, std::int64_t b, std::int64_t i0, std::int64_t i1) {
  const float* s = reinterpret_cast<const float*>(a.maps.ptr) + 2 * (a.maps_batch == 1 ? 0 : b) * a.coils * a.n;
  const float* k = reinterpret_cast<const float*>(a.k.ptr) + 2 * b * a.coils * a.n;
  float* o = reinterpret_cast<float*>(a.out.ptr) + 2 * b * a.n;
  for (std::int64_t i = 2 * i0; i < 2 * i1; ++i) o[i] = 0.0f;
  for (std::int64_t c = 0; c < a.coils; ++c) {
    const float* sc = s + 2 * c * a.n;
    const float* kc = k + 2 * c * a.n;
    for (std::int64_t i = 2 * i0; i < 2 * i1; i += 2) {
      o[i] = o[i] + (sc[i] * kc[i] + sc[i + 1] * kc[i + 1]);
      o[i + 1] = o[i + 1] + (sc[i] * kc[i + 1] - sc[i + 1] * kc[i]);
    }
  }
  if (!(a.flags & kSign)) return;
  for (std::int64_t l0 = i0; l0 < i1; l0 += a.w) {
    const float sl = line_sign(a, l0);
    for (std::int64_t j = 0; j < a.w; ++j) {
      const float g = alt(a, sl, j);
      o[2 * (l0 + j)] *= g;
      o[2 * (l0 + j) + 1] *= g;
    }
  }
}

constexpr std::int64_t kSpan = 8192;  // elements per task, rounded to whole lines

}  // namespace

int dc_cpu(const DcArgs& a) {
  const int status = check_dc(a);
  if (status != kOk || a.batch == 0 || a.coils == 0 || a.n == 0) return status;
  // without the sign, lines are just a partition: use one "line" of the whole row when w does not divide n
  DcArgs v = a;
  v.nthreads = cpu_threads(a.nthreads);
  if (!(v.flags & kSign) && v.n % v.w != 0) {
    v.w = v.n;
    v.h = 1;
  }
  const std::int64_t lines_per_span = std::max<std::int64_t>(1, kSpan / v.w);
  const std::int64_t span = lines_per_span * v.w, spans = (v.n + span - 1) / span;
  const std::int64_t rows = v.op == kCombine ? v.batch : v.batch * v.coils;
  const std::int64_t tasks = rows * spans;
  const bool parallel = v.nthreads > 1 && v.batch * v.coils * v.n >= 32768;
#pragma omp parallel for num_threads(v.nthreads) schedule(static) if (parallel)
  for (std::int64_t t = 0; t < tasks; ++t) {
    const std::int64_t r = t / spans, i0 = (t % spans) * span, i1 = std::min(v.n, i0 + span);
    if (v.op == kCombine)
      combine_span(v, r, i0, i1);
    else if (v.op == kExpand)
      expand_span(v, r / v.coils, r % v.coils, i0, i1);
    else
      blend_span(v, r / v.coils, r % v.coils, i0, i1);
  }
  return kOk;
}

}  // namespace mridpm
