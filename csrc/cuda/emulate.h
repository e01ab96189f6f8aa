// The CUDA kernels run on the host: every block and thread of the launch step_cuda and dc_cuda would
// make, in order, through the same kernel bodies (step_kernel.h, dc_kernel.h) compiled as host code,
// with every memory access checked against the call's buffers. Built always, CUDA or not; tests use
// it to prove the CUDA kernels (index arithmetic, grid-stride loops, vector paths, rounding, noise)
// without a GPU. What it cannot show: README.md, "What the CUDA emulation cannot show".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../dc.h"
#include "../step.h"

namespace mridpm {

// bytes of host memory at `real` that the kernels see at address `virt`.
struct EmuWindow {
  std::uintptr_t virt = 0, real = 0;
  std::int64_t bytes = 0;
};

struct EmuGrid {
  std::int64_t grid_cap = 1 << 20;             // at most this many blocks (the device cap by default; < 2^31)
  std::int64_t block_begin = 0, block_end = -1;  // the blocks run, [begin, end) (-1: to the grid's end)
  std::vector<EmuWindow> windows;              // empty: each buffer of the call, at its own address
};

struct EmuReport {
  std::int64_t grid = 0, threads = 0, blocks_run = 0;
  bool vec = false;
};

int step_emulated(const StepArgs& a, const EmuGrid& g, EmuReport* report);
int dc_emulated(const DcArgs& a, const EmuGrid& g, EmuReport* report);
// The fault behind the last kEmulationFault of this thread: the access, its address and its thread.
const char* last_emulation_fault();

}  // namespace mridpm
