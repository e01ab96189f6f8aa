// The thread count of a CPU kernel's OpenMP loop: the caller's request, clamped to [1, processors].
// More threads than processors never speeds these loops up, and a huge request is a crash, not a
// slowdown: num_threads(100000) segfaulted inside libgomp and num_threads(INT_MAX) aborted it
// (out of memory), both from a plain int argument of mridpm._C.
#pragma once
#include <omp.h>

namespace mridpm {

inline int cpu_threads(int requested) {
  const int procs = omp_get_num_procs();
  return requested < 1 ? 1 : (requested > procs ? procs : requested);
}

}  // namespace mridpm
