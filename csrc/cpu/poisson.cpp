// Dart throwing for variable-density Poisson-disc masks: candidates in the given order are kept
// when no kept point lies strictly within their own radius (a scan of the disc around them).
#include <cmath>
#include <cstdint>

#include "../poisson.h"

namespace mridpm {

int poisson_disc(std::int64_t h, std::int64_t w, const Buffer& radius, const Buffer& order, const Buffer& out) {
  if (h < 1 || w < 1 || h > (INT64_MAX / w)) return kBadShape;
  const std::int64_t n = h * w;
  if (radius.ptr == 0 || order.ptr == 0 || out.ptr == 0) return kNullPointer;
  if (radius.capacity < n || order.capacity < n || out.capacity < n) return kOutOfBounds;
  const float* r = reinterpret_cast<const float*>(radius.ptr);
  const std::int64_t* ord = reinterpret_cast<const std::int64_t*>(order.ptr);
  std::uint8_t* kept = reinterpret_cast<std::uint8_t*>(out.ptr);
  for (std::int64_t j = 0; j < n; ++j) {
    if (ord[j] < 0 || ord[j] >= n || !(r[j] >= 0.0f) || !std::isfinite(r[j])) return kOutOfBounds;
  }
  for (std::int64_t j = 0; j < n; ++j) kept[j] = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    const std::int64_t idx = ord[j], y = idx / w, x = idx % w;
    const float rad = r[idx];
    const std::int64_t reach = static_cast<std::int64_t>(std::ceil(rad));
    bool near = false;
    for (std::int64_t dy = -reach; dy <= reach && !near; ++dy) {
      const std::int64_t yy = y + dy;
      if (yy < 0 || yy >= h) continue;
      for (std::int64_t dx = -reach; dx <= reach; ++dx) {
        const std::int64_t xx = x + dx;
        if (xx < 0 || xx >= w || !kept[yy * w + xx]) continue;
        if (static_cast<float>(dy * dy + dx * dx) < rad * rad) {
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
