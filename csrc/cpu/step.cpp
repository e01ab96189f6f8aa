// CPU entry point: checks the arguments, then runs the widest variant this CPU supports.
#include "../step.h"

namespace mridpm {
namespace generic { void step(const StepArgs& a); }
#if defined(MRIDPM_X86)
namespace avx2 { void step(const StepArgs& a); }
namespace avx512 { void step(const StepArgs& a); }
#endif

int step_cpu(const StepArgs& a) {
  const int status = check_step(a);
  if (status != kOk || a.batch == 0 || a.inner == 0) return status;
#if defined(MRIDPM_X86)
  if (__builtin_cpu_supports("avx512f")) {
    avx512::step(a);
    return kOk;
  }
  if (__builtin_cpu_supports("avx2")) {
    avx2::step(a);
    return kOk;
  }
#endif
  generic::step(a);
  return kOk;
}

}  // namespace mridpm
