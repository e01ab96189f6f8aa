// Variable-density Poisson-disc dart throwing (see cpu/poisson.cpp).
#pragma once
#include <cstdint>

#include "common.h"

namespace mridpm {

// radius: float32[h*w]; order: int64[h*w], the visiting order; out: uint8[h*w], 1 where kept.
int poisson_disc(std::int64_t h, std::int64_t w, const Buffer& radius, const Buffer& order, const Buffer& out);

}  // namespace mridpm
