// The CUDA emulation (emulate.h): the kernel bodies of step_kernel.h and dc_kernel.h compiled as host
// code, with ld/st/ld4/st4 going through translate() below.
#define MRIDPM_EMULATION 1
#include "emulate.h"

#include <stdexcept>

#include "dc_kernel.h"
#include "step_kernel.h"

namespace mridpm {
namespace {

thread_local const std::vector<EmuWindow>* g_windows = nullptr;
thread_local const ThreadCtx* g_ctx = nullptr;
thread_local std::string g_fault;

struct Fault : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string where() {
  if (g_ctx == nullptr) return "";
  return " by block " + std::to_string(g_ctx->blockIdx.x) + ", thread " + std::to_string(g_ctx->threadIdx.x);
}

void add(std::vector<EmuWindow>* w, const Buffer& b, std::int64_t elem_bytes) {
  if (b.ptr != 0 && b.capacity > 0) w->push_back({b.ptr, b.ptr, b.capacity * elem_bytes});
}

// Runs blocks [begin, end) of a grid of `grid` blocks of `threads` threads, each thread calling body(ctx).
template <class Body>
int run_grid(const EmuGrid& g, std::vector<EmuWindow> own, std::int64_t grid, int threads, EmuReport* report,
             Body body) {
  const std::vector<EmuWindow>& windows = g.windows.empty() ? own : g.windows;
  const std::int64_t end = g.block_end < 0 || g.block_end > grid ? grid : g.block_end;
  report->grid = grid;
  report->threads = threads;
  report->blocks_run = end > g.block_begin ? end - g.block_begin : 0;
  ThreadCtx ctx;
  ctx.gridDim = {static_cast<unsigned>(grid), 1, 1};
  ctx.blockDim = {static_cast<unsigned>(threads), 1, 1};
  g_windows = &windows;
  g_ctx = &ctx;
  int status = kOk;
  try {
    for (std::int64_t blk = g.block_begin < 0 ? 0 : g.block_begin; blk < end; ++blk)
      for (int t = 0; t < threads; ++t) {
        ctx.blockIdx = {static_cast<unsigned>(blk), 0, 0};
        ctx.threadIdx = {static_cast<unsigned>(t), 0, 0};
        body(ctx);
      }
  } catch (const Fault& f) {
    g_fault = f.what();
    status = kEmulationFault;
  }
  g_windows = nullptr;
  g_ctx = nullptr;
  return status;
}

template <int DT>
int step_dtype(const StepArgs& a, const EmuGrid& g, std::vector<EmuWindow> own, EmuReport* report) {
  const StepLaunch l = step_launch(a, g.grid_cap);
  report->vec = l.vec;
  if (l.vec)
    return run_grid(g, std::move(own), l.grid, kStepThreads, report,
                    [&](const ThreadCtx& c) { step_body<DT, true>(c, a, l.tiles_per_row, l.tiles); });
  return run_grid(g, std::move(own), l.grid, kStepThreads, report,
                  [&](const ThreadCtx& c) { step_body<DT, false>(c, a, l.tiles_per_row, l.tiles); });
}

}  // namespace

namespace emu {
const void* translate(const void* p, std::size_t bytes, std::size_t align) {
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  if (addr % align != 0)
    throw Fault("misaligned access of " + std::to_string(bytes) + " bytes at " + std::to_string(addr) + where() +
                " (a device would fault)");
  if (g_windows != nullptr)
    for (const EmuWindow& w : *g_windows)
      if (addr >= w.virt && addr - w.virt <= static_cast<std::uintptr_t>(w.bytes) &&
          bytes <= static_cast<std::uintptr_t>(w.bytes) - (addr - w.virt))
        return reinterpret_cast<const void*>(w.real + (addr - w.virt));
  throw Fault("access of " + std::to_string(bytes) + " bytes at " + std::to_string(addr) + where() +
              " lies outside every buffer of the call");
}
}  // namespace emu

const char* last_emulation_fault() { return g_fault.c_str(); }

int step_emulated(const StepArgs& a, const EmuGrid& g, EmuReport* report) {
  const int status = check_step(a);
  if (status != kOk || a.batch == 0 || a.inner == 0) return status;
  if (g.grid_cap < 1 || g.grid_cap > INT32_MAX) return kBadShape;  // gridDim.x < 2^31
  const std::int64_t elem = a.dtype == kFloat32 ? 4 : 2;
  std::vector<EmuWindow> own;
  add(&own, a.out, elem);
  if (a.flags & kWriteX0) add(&own, a.x0, elem);
  for (int k = 0; k < a.K; ++k) add(&own, a.in[k], elem);
  if (!a.has_uniform) add(&own, a.params, 4);
  add(&own, a.rng, 8);
  switch (a.dtype) {
    case kFloat32: return step_dtype<kFloat32>(a, g, std::move(own), report);
    case kFloat16: return step_dtype<kFloat16>(a, g, std::move(own), report);
    default: return step_dtype<kBFloat16>(a, g, std::move(own), report);
  }
}

int dc_emulated(const DcArgs& a, const EmuGrid& g, EmuReport* report) {
  const int status = check_dc(a);
  if (status != kOk || a.batch == 0 || a.coils == 0 || a.n == 0) return status;
  if (g.grid_cap < 1 || g.grid_cap > INT32_MAX) return kBadShape;  // gridDim.x < 2^31
  std::vector<EmuWindow> own;
  for (const Buffer* b : {&a.x, &a.maps, &a.k, &a.y, &a.mask, &a.out}) add(&own, *b, 4);
  const DcLaunch l = dc_launch(a, g.grid_cap);
  return run_grid(g, std::move(own), l.grid, kDcThreads, report,
                  [&](const ThreadCtx& c) { dc_body(c, a, l.total); });
}

}  // namespace mridpm
