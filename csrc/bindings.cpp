// The pybind11 module mridpm._C: argument packing and one line per entry point.
// Buffers arrive as (pointer, batch_stride, capacity) triples in elements; a step's params
// come either as such a buffer or, when one row serves every sample, as a list of floats.
// Every kernel has a _cpu and a _cuda entry taking the same arguments, then where it runs:
// the CPU thread count or the CUDA stream, and an _<name>_emulated entry running the CUDA kernels'
// grid on the host (tests; cuda/emulate.h). Names with a leading underscore are helpers, not kernels. The codes Python passes (flag bits, dtype and op codes) are
// exported from the headers, so they are defined once. Bad arguments raise ValueError; CUDA
// failures (and emulated faults) raise RuntimeError with CUDA's message.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/emulate.h"
#include "cuda/runtime.h"
#include "dc.h"
#include "poisson.h"
#include "step.h"

namespace py = pybind11;
using Triple = std::array<std::int64_t, 3>;

namespace {

mridpm::Buffer to_buffer(const Triple& t) {
  return {static_cast<std::uintptr_t>(t[0]), t[1], t[2]};
}

void raise_on(int status) {
  if (status == mridpm::kOk) return;
  std::string msg = std::string("mridpm._C: ") + mridpm::status_message(status);
  if (status == mridpm::kCudaError || status == mridpm::kCudaDriver)
    throw std::runtime_error(msg + ": " + mridpm::last_cuda_error());
  if (status == mridpm::kEmulationFault) throw std::runtime_error(msg + ": " + mridpm::last_emulation_fault());
  throw std::invalid_argument(msg);
}

mridpm::StepArgs step_args(int dtype, int flags, std::int64_t batch, std::int64_t inner, const Triple& out,
                           const Triple& x0, const std::vector<Triple>& inputs, const Triple& params,
                           const std::vector<float>& uniform, std::uint64_t seed, std::uint64_t offset,
                           const Triple& rng, int nthreads, bool shared_rows) {
  if (inputs.empty() || inputs.size() > 4) raise_on(mridpm::kBadCount);
  const auto row = static_cast<std::size_t>(mridpm::step_params(static_cast<int>(inputs.size())));
  if (!uniform.empty() && uniform.size() != row)
    throw std::invalid_argument("mridpm._C: a uniform params row must hold 2 K + 5 values");
  mridpm::StepArgs a;
  a.dtype = dtype;
  a.K = static_cast<int>(inputs.size());
  a.flags = flags;
  a.nthreads = nthreads < 1 ? 1 : nthreads;
  a.batch = batch;
  a.inner = inner;
  a.out = to_buffer(out);
  a.x0 = to_buffer(x0);
  for (int k = 0; k < a.K; ++k) a.in[k] = to_buffer(inputs[k]);
  a.params = to_buffer(params);
  a.has_uniform = !uniform.empty();
  for (std::size_t j = 0; j < uniform.size(); ++j) a.uniform[j] = uniform[j];
  a.seed = seed;
  a.offset = offset;
  a.rng = to_buffer(rng);
  a.shared_rows = shared_rows;
  return a;
}

void step_cpu(int dtype, int flags, std::int64_t batch, std::int64_t inner, const Triple& out, const Triple& x0,
              const std::vector<Triple>& inputs, const Triple& params, const std::vector<float>& uniform,
              std::uint64_t seed, std::uint64_t offset, const Triple& rng, int nthreads, bool shared_rows) {
  const auto a =
      step_args(dtype, flags, batch, inner, out, x0, inputs, params, uniform, seed, offset, rng, nthreads, shared_rows);
  py::gil_scoped_release release;
  raise_on(mridpm::step_cpu(a));
}

void step_cuda(int dtype, int flags, std::int64_t batch, std::int64_t inner, const Triple& out, const Triple& x0,
               const std::vector<Triple>& inputs, const Triple& params, const std::vector<float>& uniform,
               std::uint64_t seed, std::uint64_t offset, const Triple& rng, std::uintptr_t stream, bool shared_rows) {
  const auto a = step_args(dtype, flags, batch, inner, out, x0, inputs, params, uniform, seed, offset, rng, 1, shared_rows);
  raise_on(mridpm::step_cuda(a, stream));
}

// The emulation's grid: at most grid_cap blocks, blocks [first, last) run, the memory windows
// (virtual address, host address, bytes) the kernels may touch (none: the call's own buffers).
mridpm::EmuGrid emu_grid(std::int64_t grid_cap, const std::array<std::int64_t, 2>& blocks,
                         const std::vector<std::array<std::uintptr_t, 3>>& windows) {
  if (grid_cap < 1 || grid_cap > INT32_MAX) throw std::invalid_argument("mridpm._C: grid_cap must be 1 to 2^31 - 1");
  mridpm::EmuGrid g;
  g.grid_cap = grid_cap;
  g.block_begin = blocks[0];
  g.block_end = blocks[1];
  for (const auto& w : windows) g.windows.push_back({w[0], w[1], static_cast<std::int64_t>(w[2])});
  return g;
}

py::dict emu_report(const mridpm::EmuReport& r) {
  return py::dict(py::arg("grid") = r.grid, py::arg("threads") = r.threads, py::arg("blocks_run") = r.blocks_run,
                  py::arg("vec") = r.vec);
}

using Windows = std::vector<std::array<std::uintptr_t, 3>>;
using Blocks = std::array<std::int64_t, 2>;

py::dict step_emulated(int dtype, int flags, std::int64_t batch, std::int64_t inner, const Triple& out,
                       const Triple& x0, const std::vector<Triple>& inputs, const Triple& params,
                       const std::vector<float>& uniform, std::uint64_t seed, std::uint64_t offset, const Triple& rng,
                       std::int64_t grid_cap, const Blocks& blocks, const Windows& windows, bool shared_rows) {
  const auto a = step_args(dtype, flags, batch, inner, out, x0, inputs, params, uniform, seed, offset, rng, 1, shared_rows);
  mridpm::EmuReport r;
  raise_on(mridpm::step_emulated(a, emu_grid(grid_cap, blocks, windows), &r));
  return emu_report(r);
}

// Data-consistency kernels: sizes (batch, coils, n, h, w, maps_batch, mask_batch, mask_coils), the
// buffers (x, maps, k, y, mask, out) as triples with capacities in floats, and the scalars (a, lam, ysign).
using DcBuffers = std::array<Triple, 6>;

// spatial: the spatial sizes, for the sign (empty: (n / (h w), h, w)).
mridpm::DcArgs dc_args(int op, int flags, const std::array<std::int64_t, 8>& sizes, const DcBuffers& buffers,
                       const std::array<float, 3>& scalars, int nthreads, const std::vector<std::int64_t>& spatial) {
  mridpm::DcArgs a;
  a.op = op;
  a.flags = flags;
  a.nthreads = nthreads < 1 ? 1 : nthreads;
  a.batch = sizes[0];
  a.coils = sizes[1];
  a.n = sizes[2];
  a.h = sizes[3];
  a.w = sizes[4];
  a.maps_batch = sizes[5];
  a.mask_batch = sizes[6];
  a.mask_coils = sizes[7];
  mridpm::Buffer* slots[6] = {&a.x, &a.maps, &a.k, &a.y, &a.mask, &a.out};
  for (int j = 0; j < 6; ++j) *slots[j] = to_buffer(buffers[j]);
  a.a = scalars[0];
  a.lam = scalars[1];
  a.ysign = scalars[2];
  mridpm::dc_sign_dims(a, spatial.data(), static_cast<int>(spatial.size()));
  return a;
}

void dc_cpu(int op, int flags, const std::array<std::int64_t, 8>& sizes, const DcBuffers& buffers,
            const std::array<float, 3>& scalars, int nthreads, const std::vector<std::int64_t>& spatial) {
  const auto a = dc_args(op, flags, sizes, buffers, scalars, nthreads, spatial);
  py::gil_scoped_release release;
  raise_on(mridpm::dc_cpu(a));
}

void dc_cuda(int op, int flags, const std::array<std::int64_t, 8>& sizes, const DcBuffers& buffers,
             const std::array<float, 3>& scalars, std::uintptr_t stream, const std::vector<std::int64_t>& spatial) {
  raise_on(mridpm::dc_cuda(dc_args(op, flags, sizes, buffers, scalars, 1, spatial), stream));
}

py::dict dc_emulated(int op, int flags, const std::array<std::int64_t, 8>& sizes, const DcBuffers& buffers,
                     const std::array<float, 3>& scalars, std::int64_t grid_cap, const Blocks& blocks,
                     const Windows& windows, const std::vector<std::int64_t>& spatial) {
  mridpm::EmuReport r;
  raise_on(mridpm::dc_emulated(dc_args(op, flags, sizes, buffers, scalars, 1, spatial),
                               emu_grid(grid_cap, blocks, windows), &r));
  return emu_report(r);
}

py::tuple cuda_versions() {
  int driver = 0, runtime = 0;
  mridpm::cuda_versions(&driver, &runtime);
  return py::make_tuple(driver, runtime);
}

using Pair = std::array<std::int64_t, 2>;

void poisson_disc(std::int64_t h, std::int64_t w, const Pair& radius, const Pair& order, const Pair& out) {
  auto buf = [](const Pair& p) { return mridpm::Buffer{static_cast<std::uintptr_t>(p[0]), 0, p[1]}; };
  py::gil_scoped_release release;
  raise_on(mridpm::poisson_disc(h, w, buf(radius), buf(order), buf(out)));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mridpm compiled kernels (CPU always, CUDA when built)";
  m.attr("cuda_built") = mridpm::cuda_built();
  // The codes Python passes, read from the headers (python/mridpm/ops/_contract.py holds the fallback copies).
  m.attr("step_flags") = py::dict(py::arg("HAS_X0") = int{mridpm::kHasX0}, py::arg("CLAMP") = int{mridpm::kClamp},
                                  py::arg("WRITE_X0") = int{mridpm::kWriteX0}, py::arg("NOISE") = int{mridpm::kNoise});
  m.attr("dtype_codes") = py::dict(py::arg("float32") = int{mridpm::kFloat32},
                                   py::arg("float16") = int{mridpm::kFloat16},
                                   py::arg("bfloat16") = int{mridpm::kBFloat16});
  m.attr("dc_ops") = py::dict(py::arg("expand") = int{mridpm::kExpand}, py::arg("blend") = int{mridpm::kBlend},
                              py::arg("combine") = int{mridpm::kCombine});
  m.attr("dc_flags") = py::dict(py::arg("SIGN") = int{mridpm::kSign});
// The argument names of the step and DC entries before their last one, and the emulation's.
#define MRIDPM_STEP_ARGS                                                                                         \
  py::arg("dtype"), py::arg("flags"), py::arg("batch"), py::arg("inner"), py::arg("out"), py::arg("x0"),          \
      py::arg("inputs"), py::arg("params"), py::arg("uniform"), py::arg("seed"), py::arg("offset"), py::arg("rng")
#define MRIDPM_DC_ARGS py::arg("op"), py::arg("flags"), py::arg("sizes"), py::arg("buffers"), py::arg("scalars")
#define MRIDPM_EMU_ARGS \
  py::arg("grid_cap") = std::int64_t{1} << 20, py::arg("blocks") = Blocks{0, -1}, py::arg("windows") = Windows{}
  const std::vector<std::int64_t> no_spatial;
  m.def("step_cpu", &step_cpu, "Fused sampler step on the CPU", MRIDPM_STEP_ARGS, py::arg("nthreads"),
        py::arg("shared_rows") = false);
  m.def("step_cuda", &step_cuda, "Fused sampler step on a CUDA stream", MRIDPM_STEP_ARGS, py::arg("stream"),
        py::arg("shared_rows") = false);
  m.def("_step_emulated", &step_emulated, "Fused sampler step: the CUDA kernel's grid run on the host",
        MRIDPM_STEP_ARGS, MRIDPM_EMU_ARGS, py::arg("shared_rows") = false);
  m.def("dc_cpu", &dc_cpu, "Data-consistency kernel (expand, blend, combine) on the CPU", MRIDPM_DC_ARGS,
        py::arg("nthreads"), py::arg("spatial") = no_spatial);
  m.def("dc_cuda", &dc_cuda, "Data-consistency kernel on a CUDA stream", MRIDPM_DC_ARGS, py::arg("stream"),
        py::arg("spatial") = no_spatial);
  m.def("_dc_emulated", &dc_emulated, "Data-consistency kernel: the CUDA kernel's grid run on the host",
        MRIDPM_DC_ARGS, MRIDPM_EMU_ARGS, py::arg("spatial") = no_spatial);
  m.def("_cuda_versions", &cuda_versions, "(driver, runtime) CUDA versions as 1000 major + 10 minor; 0: none");
  m.def("_cuda_driver_problem", &mridpm::cuda_driver_problem, py::arg("driver"), py::arg("runtime"),
        "Why a driver cannot run kernels built with a runtime ('' when it can)");
  m.def("_cuda_sync", &mridpm::cuda_sync, "Whether each CUDA launch is synchronized (MRIDPM_CUDA_SYNC=1)");
  m.def("_set_cuda_sync", &mridpm::set_cuda_sync, py::arg("on"), "Synchronize after each CUDA launch (or stop)");
  m.def("_raise_status", &raise_on, py::arg("status"), "Raises the error a kernel status maps to (tests)");
  m.def("poisson_disc", &poisson_disc, "Dart throwing for Poisson-disc masks (capacities in elements)");
}
