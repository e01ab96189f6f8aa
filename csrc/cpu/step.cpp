// CPU entry point: checks the arguments, then runs the widest variant this CPU supports.
// MRIDPM_CPU_ISA=generic|avx2|avx512 caps the choice (tests use it to cover every variant).
#include <cstdlib>
#include <cstring>

#include "../step.h"
#include "threads.h"

namespace mridpm {
namespace generic { void step(const StepArgs& a); }
#if defined(MRIDPM_X86)
namespace avx2 { void step(const StepArgs& a); }
namespace avx512 { void step(const StepArgs& a); }
#endif

namespace {

enum Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

int best_isa() {
  int isa = kGeneric;
#if defined(MRIDPM_X86)
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) isa = kAvx2;
  if (isa == kAvx2 && __builtin_cpu_supports("avx512f")) isa = kAvx512;
#endif
  const char* cap = std::getenv("MRIDPM_CPU_ISA");
  if (cap != nullptr) {
    const int want = std::strcmp(cap, "generic") == 0 ? kGeneric : std::strcmp(cap, "avx2") == 0 ? kAvx2 : isa;
    if (want < isa) isa = want;
  }
  return isa;
}

}  // namespace

int step_cpu(const StepArgs& args) {
  const int status = check_step(args);
  if (status != kOk || args.batch == 0 || args.inner == 0) return status;
  StepArgs a = args;  // the kernels draw from (seed, offset): resolve a run-time rng state once
  step_rng(args, &a.seed, &a.offset);
  a.rng = Buffer{};
  a.nthreads = cpu_threads(args.nthreads);
  static const int isa = best_isa();
#if defined(MRIDPM_X86)
  if (isa == kAvx512) {
    avx512::step(a);
    return kOk;
  }
  if (isa == kAvx2) {
    avx2::step(a);
    return kOk;
  }
#endif
  generic::step(a);
  return kOk;
}

}  // namespace mridpm
