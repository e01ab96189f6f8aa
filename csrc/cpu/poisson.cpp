// Dart throwing for variable-density Poisson-disc masks: candidates in the given order are kept
// when no kept point lies strictly within their own radius (a scan of the disc around them).
#include <cmath>
#include <cstdint>

#include "../poisson.h"

namespace mridpm {

int poisson_disc(std::int64_t h, std::int64_t w, const Buffer& radius, const Buffer& order, const Buffer& out) {
  // each side below 2^31 keeps the squared distances dy^2 + dx^2 within int64
  constexpr std::int64_t kMaxSide = INT32_MAX;
  std::int64_t n = 0;
  if (h < 1 || w < 1 || h > kMaxSide || w > kMaxSide || !checked_mul(h, w, &n)) return kBadShape;
  if (radius.ptr == 0 || order.ptr == 0 || out.ptr == 0) return kNullPointer;
  if (radius.capacity < n || order.capacity < n || out.capacity < n) return kOutOfBounds;
  const float* r = reinterpret_cast<const float*>(radius.ptr);
  const std::int64_t* ord = reinterpret_cast<const std::int64_t*>(order.ptr);
  std::uint8_t* kept = reinterpret_cast<std::uint8_t*>(out.ptr);
  for (std::int64_t j = 0; j < n; ++j) {
    if (ord[j] < 0 || ord[j] >= n || !(r[j] >= 0.0f) || !std::isfinite(r[j])) return kOutOfBounds;
  }
  for (std::int64_t j = 0; j < n; ++j) kept[j] = 0;
  // no point of the grid lies farther than max(h, w) along either axis: a larger reach scans nothing more
  const std::int64_t side = h > w ? h : w;
  for (std::int64_t j = 0; j < n; ++j) {
    // checked again as it is read: out may overlap order or radius, and then the marks written so far
    // have changed them since the check above (an index rewritten that way once read and wrote far
    // outside every buffer); such a call stops with an error, out partly written
    const std::int64_t idx = ord[j];
    if (idx < 0 || idx >= n) return kOutOfBounds;
    const float rad = r[idx];
    if (!(rad >= 0.0f) || !std::isfinite(rad)) return kOutOfBounds;
    const std::int64_t y = idx / w, x = idx % w;
    const float rad2 = rad * rad;  // inf for huge radii, as in the reference: every kept point is near
    const double up = std::ceil(static_cast<double>(rad));
    const std::int64_t reach = up >= static_cast<double>(side) ? side : static_cast<std::int64_t>(up);
    // the window [y - reach, y + reach] x [x - reach, x + reach], clipped to the grid
    const std::int64_t y0 = y - reach < 0 ? 0 : y - reach, y1 = y + reach >= h ? h - 1 : y + reach;
    const std::int64_t x0 = x - reach < 0 ? 0 : x - reach, x1 = x + reach >= w ? w - 1 : x + reach;
    bool near = false;
    for (std::int64_t yy = y0; yy <= y1 && !near; ++yy) {
      const std::int64_t dy = yy - y;
      const std::uint8_t* row = kept + yy * w;
      for (std::int64_t xx = x0; xx <= x1; ++xx) {
        if (!row[xx]) continue;
        const std::int64_t dx = xx - x;
        if (static_cast<float>(dy * dy + dx * dx) < rad2) {
          near = true;
          break;
        }
      }
    }
    if (!near) kept[idx] = 1;
  }
  return kOk;
}

}  // namespace mridpm
