// The pybind11 module mridpm._C: argument packing and one line per entry point.
// Buffers arrive as (pointer, batch_stride, capacity) triples in elements; a step's params
// come either as such a buffer or, when one row serves every sample, as a list of floats.
// Every kernel has a _cpu and a _cuda entry taking the same arguments, then where it runs:
// the CPU thread count or the CUDA stream. The codes Python passes (flag bits, dtype and op
// codes) are exported from the headers, so they are defined once.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <stdexcept>
#include <string>
#include <vector>

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
  if (status == mridpm::kCudaError) msg += std::string(": ") + mridpm::last_cuda_error();
  throw std::invalid_argument(msg);
}

mridpm::StepArgs step_args(int dtype, int flags, std::int64_t batch, std::int64_t inner, const Triple& out,
                           const Triple& x0, const std::vector<Triple>& inputs, const Triple& params,
                           const std::vector<float>& uniform, std::uint64_t seed, std::uint64_t offset,
                           const Triple& rng, int nthreads) {
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
  return a;
}

void step_cpu(int dtype, int flags, std::int64_t batch, std::int64_t inner, const Triple& out, const Triple& x0,
              const std::vector<Triple>& inputs, const Triple& params, const std::vector<float>& uniform,
              std::uint64_t seed, std::uint64_t offset, const Triple& rng, int nthreads) {
  const auto a = step_args(dtype, flags, batch, inner, out, x0, inputs, params, uniform, seed, offset, rng, nthreads);
  py::gil_scoped_release release;
  raise_on(mridpm::step_cpu(a));
}

void step_cuda(int dtype, int flags, std::int64_t batch, std::int64_t inner, const Triple& out, const Triple& x0,
               const std::vector<Triple>& inputs, const Triple& params, const std::vector<float>& uniform,
               std::uint64_t seed, std::uint64_t offset, const Triple& rng, std::uintptr_t stream) {
  const auto a = step_args(dtype, flags, batch, inner, out, x0, inputs, params, uniform, seed, offset, rng, 1);
  raise_on(mridpm::step_cuda(a, stream));
}

// Data-consistency kernels: sizes (batch, coils, n, h, w, maps_batch, mask_batch, mask_coils), the
// buffers (x, maps, k, y, mask, out) as triples with capacities in floats, and the scalars (a, lam, ysign).
using DcBuffers = std::array<Triple, 6>;

mridpm::DcArgs dc_args(int op, int flags, const std::array<std::int64_t, 8>& sizes, const DcBuffers& buffers,
                       const std::array<float, 3>& scalars, int nthreads) {
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
  return a;
}

void dc_cpu(int op, int flags, const std::array<std::int64_t, 8>& sizes, const DcBuffers& buffers,
            const std::array<float, 3>& scalars, int nthreads) {
  const auto a = dc_args(op, flags, sizes, buffers, scalars, nthreads);
  py::gil_scoped_release release;
  raise_on(mridpm::dc_cpu(a));
}

void dc_cuda(int op, int flags, const std::array<std::int64_t, 8>& sizes, const DcBuffers& buffers,
             const std::array<float, 3>& scalars, std::uintptr_t stream) {
  raise_on(mridpm::dc_cuda(dc_args(op, flags, sizes, buffers, scalars, 1), stream));
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
  m.def("step_cpu", &step_cpu, "Fused sampler step on the CPU");
  m.def("step_cuda", &step_cuda, "Fused sampler step on a CUDA stream");
  m.def("dc_cpu", &dc_cpu, "Data-consistency kernel (expand, blend, combine) on the CPU");
  m.def("dc_cuda", &dc_cuda, "Data-consistency kernel on a CUDA stream");
  m.def("poisson_disc", &poisson_disc, "Dart throwing for Poisson-disc masks (capacities in elements)");
}
