// Each area's bindings live in their own file (bind_<area>.cpp) and register themselves here,
// so module.cpp never needs editing when an area is added.
#pragma once
#include <pybind11/pybind11.h>

#include <vector>

namespace mmcurate::py_bridge {

namespace py = pybind11;
using BindFn = void (*)(py::module_&);

struct Binding {
  const char* name;
  BindFn fn;
};

std::vector<Binding>& bindings();  // function-local static: safe across translation units
int register_binding(const char* name, BindFn fn);

}  // namespace mmcurate::py_bridge

// Usage (in a .cpp under csrc/python/):  MMCURATE_BINDING(hamming) { m.def(...); }
#define MMCURATE_BINDING(area)                                                                                         \
  static void mmcurate_bind_##area(pybind11::module_& m);                                                              \
  static const int mmcurate_registered_##area = ::mmcurate::py_bridge::register_binding(#area, &mmcurate_bind_##area); \
  static void mmcurate_bind_##area(pybind11::module_& m)
