// The host-only half of runtime.h, compiled with or without CUDA: the driver requirement's message
// and the synchronous-check setting.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime.h"

namespace mridpm {
namespace {

// The Linux driver release that first supports a CUDA major version (NVIDIA's compatibility table).
int driver_release(int major) {
  switch (major) {
    case 11: return 450;
    case 12: return 525;
    case 13: return 580;
    default: return 0;
  }
}

std::string version(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

int initial_sync() {
  const char* env = std::getenv("MRIDPM_CUDA_SYNC");
  return env != nullptr && env[0] != '\0' && std::strcmp(env, "0") != 0 ? 1 : 0;
}

std::atomic<int> g_sync{-1};  // -1: not read yet

}  // namespace

std::string cuda_driver_problem(int driver, int runtime) {
  const int major = runtime / 1000;
  if (runtime <= 0 || driver >= major * 1000) return {};
  const int release = driver_release(major);
  std::string need = "an NVIDIA driver for CUDA " + std::to_string(major) + ".0 or newer";
  if (release > 0) need += " (driver release " + std::to_string(release) + " or newer on Linux)";
  const std::string have =
      driver <= 0 ? "no NVIDIA driver was found" : "this machine's driver supports CUDA " + version(driver) + " only";
  return "mridpm._C was built with the CUDA " + version(runtime) + " runtime (linked statically), which needs " +
         need + "; " + have + ". Update the driver, or build mridpm from source with a CUDA toolkit this driver "
         "supports; backend='triton' or 'ref' run meanwhile";
}

bool cuda_sync() {
  int s = g_sync.load(std::memory_order_relaxed);
  if (s < 0) {
    s = initial_sync();
    int unset = -1;
    if (!g_sync.compare_exchange_strong(unset, s)) s = unset;
  }
  return s == 1;
}

void set_cuda_sync(bool on) { g_sync.store(on ? 1 : 0); }

}  // namespace mridpm
