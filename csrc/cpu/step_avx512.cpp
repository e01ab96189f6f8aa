// AVX-512 instance of the CPU step kernel (built with -mavx512f on x86-64 only).
#define MRIDPM_ISA avx512
#include "step_impl.h"
