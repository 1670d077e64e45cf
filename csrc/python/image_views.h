// numpy uint8 arrays (H, W) or (H, W, C) -> ImageViewU8, zero-copy. The caller keeps the arrays alive
// (they are held in `keep`) for as long as the views are used, typically across a GIL release.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "mmcurate/image.h"

namespace mmcurate::py_bridge {

namespace py = pybind11;

inline ImageViewU8 image_view_of(const py::array& a, size_t index) {
  const std::string where = "images[" + std::to_string(index) + "]";
  if (!py::isinstance<py::array_t<uint8_t>>(a) || a.dtype().itemsize() != 1 || a.dtype().kind() != 'u')
    throw py::type_error(where + ": expected a uint8 array");
  if (a.ndim() != 2 && a.ndim() != 3) throw py::value_error(where + ": expected shape (H, W) or (H, W, C)");
  ImageViewU8 v;
  v.data = static_cast<const uint8_t*>(a.data());
  v.height = int(a.shape(0));
  v.width = int(a.shape(1));
  v.channels = a.ndim() == 3 ? int(a.shape(2)) : 1;
  v.row_stride = a.strides(0);
  v.pixel_stride = a.strides(1);
  if (v.height < 1 || v.width < 1) throw py::value_error(where + ": empty image");
  if (v.channels < 1 || v.channels > 4) throw py::value_error(where + ": channels must be 1..4");
  if (a.ndim() == 3 && a.strides(2) != 1 && v.channels > 1)
    throw py::value_error(where + ": channels must be contiguous (stride 1); pass np.ascontiguousarray(image)");
  if (v.row_stride <= 0 || v.pixel_stride <= 0)
    throw py::value_error(where + ": negative or zero strides; pass np.ascontiguousarray(image)");
  return v;
}

inline std::vector<ImageViewU8> image_views_of(const py::sequence& images, std::vector<py::array>& keep) {
  std::vector<ImageViewU8> views;
  views.reserve(py::len(images));
  keep.reserve(py::len(images));
  for (size_t i = 0; i < py::len(images); ++i) {
    keep.push_back(py::reinterpret_borrow<py::array>(images[i]));
    views.push_back(image_view_of(keep.back(), i));
  }
  return views;
}

}  // namespace mmcurate::py_bridge
