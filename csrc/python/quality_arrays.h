// QualitySignals -> (float32[n, 7] in the struct's field order, bool[n] low_information), shared by the
// bindings that return quality signals (bind_quality.cpp, bind_hashes.cpp, bind_cuda.cpp).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "mmcurate/quality.h"

namespace mmcurate::py_bridge {

inline pybind11::tuple quality_arrays(const std::vector<QualitySignals>& q) {
  namespace py = pybind11;
  const auto n = py::ssize_t(q.size());
  py::array_t<float> values({n, py::ssize_t(7)});
  py::array_t<bool> low(n);
  auto v = values.mutable_unchecked<2>();
  auto f = low.mutable_unchecked<1>();
  for (py::ssize_t i = 0; i < n; ++i) {
    const QualitySignals& s = q[size_t(i)];
    const float row[7] = {s.sharpness,       s.brightness,    s.contrast, s.colourfulness,
                          s.border_fraction, s.flat_fraction, s.entropy};
    for (int k = 0; k < 7; ++k) v(i, k) = row[k];
    f(i) = s.low_information;
  }
  return py::make_tuple(values, low);
}

}  // namespace mmcurate::py_bridge
