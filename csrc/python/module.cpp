// The only translation unit that defines the module; areas register via MMCURATE_BINDING.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <string>

#include "mmcurate/decode.h"
#include "mmcurate/parallel.h"
#include "python/registry.h"

namespace mmcurate::py_bridge {

std::vector<Binding>& bindings() {
  static std::vector<Binding> all;
  return all;
}

int register_binding(const char* name, BindFn fn) {
  bindings().push_back({name, fn});
  return int(bindings().size());
}

static std::string simd_flags() {
  std::string s;
#if defined(__AVX512F__)
  s += "avx512f ";
#endif
#if defined(__AVX512VPOPCNTDQ__)
  s += "avx512vpopcntdq ";
#endif
#if defined(__AVX2__)
  s += "avx2 ";
#endif
#if defined(__FMA__)
  s += "fma ";
#endif
#if defined(__SSE4_2__)
  s += "sse4.2 ";
#endif
#if defined(__POPCNT__)
  s += "popcnt ";
#endif
  if (!s.empty()) s.pop_back();
  return s;
}

}  // namespace mmcurate::py_bridge

PYBIND11_MODULE(_C, m) {
  namespace py = pybind11;
  using namespace mmcurate::py_bridge;
  m.doc() = "mmcurate native kernels (CPU, and CUDA when built with it)";
  // Register in a fixed order so the module's layout does not depend on link order.
  auto all = bindings();
  std::sort(all.begin(), all.end(),
            [](const Binding& a, const Binding& b) { return std::string(a.name) < std::string(b.name); });
  py::list areas;
  for (const auto& b : all) {
    b.fn(m);
    areas.append(b.name);
  }
  m.attr("binding_areas") = areas;

  m.def("native_build_info", [] {
    py::dict d;
    d["version"] = MMCURATE_VERSION;
#ifdef MMCURATE_WITH_CUDA
    d["cuda"] = true;
    d["cuda_archs"] = std::string(MMCURATE_CUDA_ARCHS_STR);
#else
    d["cuda"] = false;
    d["cuda_archs"] = std::string();
#endif
#ifdef MMCURATE_WITH_NVJPEG
    d["nvjpeg_header"] = true;
#else
    d["nvjpeg_header"] = false;
#endif
    d["march"] = std::string(MMCURATE_ARCH_FLAG);
    d["simd"] = simd_flags();
    d["jpeg"] = mmcurate::jpeg_library_version();
    d["png"] = mmcurate::png_library_version();
    d["webp"] = mmcurate::webp_library_version();
    d["default_threads"] = mmcurate::default_num_threads();
    d["compiler"] = std::string(__VERSION__);
    return d;
  });
}
