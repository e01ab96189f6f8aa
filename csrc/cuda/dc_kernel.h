// The CUDA data-consistency kernel body (see dc.h) and its launch shape, one source for the device
// (dc.cu wraps the body in a __global__) and the host emulation (emulate.cpp): one thread per output
// element, in a grid-stride loop.
#pragma once
#include <cstdint>

#include "../dc.h"
#include "portable.h"

namespace mridpm {

constexpr int kDcThreads = 256;

// One thread's whole share of the launch: elements e = its global index, + the grid's thread count, ...
MRIDPM_HD void dc_body(const ThreadCtx& ctx, const DcArgs& a, std::int64_t total) {
  const auto* x = reinterpret_cast<const Complex*>(a.x.ptr);
  const auto* s = reinterpret_cast<const Complex*>(a.maps.ptr);
  const auto* k = reinterpret_cast<const Complex*>(a.k.ptr);
  const auto* y = reinterpret_cast<const Complex*>(a.y.ptr);
  const auto* m = reinterpret_cast<const float*>(a.mask.ptr);
  auto* o = reinterpret_cast<Complex*>(a.out.ptr);
  const std::int64_t stride = static_cast<std::int64_t>(ctx.gridDim.x) * ctx.blockDim.x;
  for (std::int64_t e = static_cast<std::int64_t>(ctx.blockIdx.x) * ctx.blockDim.x + ctx.threadIdx.x; e < total;
       e += stride) {
    const std::int64_t i = e % a.n;
    const float g = dc_sign(a, i);
    if (a.op == kCombine) {  // e = b * n + i
      const std::int64_t b = e / a.n;
      const Complex* sb = s + (a.maps_batch == 1 ? 0 : b) * a.coils * a.n + i;
      const Complex* kb = k + b * a.coils * a.n + i;
      float re = 0.0f, im = 0.0f;
      for (std::int64_t c = 0; c < a.coils; ++c) {
        const Complex sc = ld(sb + c * a.n), kc = ld(kb + c * a.n);
        re = re + (sc.x * kc.x + sc.y * kc.y);
        im = im + (sc.x * kc.y - sc.y * kc.x);
      }
      st(o + e, make_complex(g * re, g * im));
    } else {  // e = (b * coils + c) * n + i
      const std::int64_t row = e / a.n, b = row / a.coils, c = row % a.coils;
      if (a.op == kExpand) {
        const Complex sv = ld(s + ((a.maps_batch == 1 ? 0 : b) * a.coils + c) * a.n + i), xv = ld(x + b * a.n + i);
        st(o + e, make_complex(g * (sv.x * xv.x - sv.y * xv.y), g * (sv.x * xv.y + sv.y * xv.x)));
      } else {
        const float mv = ld(m + ((a.mask_batch == 1 ? 0 : b) * a.mask_coils + (a.mask_coils == 1 ? 0 : c)) * a.n + i);
        const float t = a.lam * mv, gy = a.ysign * g;
        const Complex kv = ld(k + e), yv = ld(y + e);
        st(o + e, make_complex(a.a * kv.x + t * (gy * yv.x - kv.x), a.a * kv.y + t * (gy * yv.y - kv.y)));
      }
    }
  }
}

// The launch of one checked call: the element count and the blocks (at most grid_cap; kGridCap on the device).
struct DcLaunch {
  std::int64_t total = 0, grid = 0;
};

inline DcLaunch dc_launch(const DcArgs& a, std::int64_t grid_cap) {
  DcLaunch l;
  l.total = (a.op == kCombine ? 1 : a.coils) * a.batch * a.n;
  const std::int64_t blocks = (l.total + kDcThreads - 1) / kDcThreads;
  l.grid = blocks < grid_cap ? blocks : grid_cap;
  return l;
}

}  // namespace mridpm
