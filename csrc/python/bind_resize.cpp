// Python bindings: Pillow-exact resize and gray conversion (mmcurate.ops.resize wraps these).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "mmcurate/resize.h"
#include "python/image_views.h"
#include "python/registry.h"

namespace py = pybind11;
using namespace mmcurate;

MMCURATE_BINDING(resize) {
  m.def(
      "resize_images",
      [](py::sequence images, int size_h, int size_w, int filter, int mode, int num_threads) {
        if (filter < 0 || filter > 5) throw py::value_error("resize_images: unknown filter id");
        if (mode != 0 && mode != 1) throw py::value_error("resize_images: unknown mode id");
        std::vector<py::array> keep;
        auto views = py_bridge::image_views_of(images, keep);
        int out_h = size_h, out_w = size_w, channels = views.empty() ? 3 : views[0].channels;
        if (!views.empty()) {
          auto g = resize_geometry(views[0].height, views[0].width, ResizeMode(mode), size_h, size_w);
          out_h = g.window.height;
          out_w = g.window.width;
        }
        py::array_t<uint8_t> out(
            {py::ssize_t(views.size()), py::ssize_t(out_h), py::ssize_t(out_w), py::ssize_t(channels)});
        uint8_t* dst = out.mutable_data();
        {
          py::gil_scoped_release release;
          resize_batch(views, ResizeMode(mode), size_h, size_w, ResampleFilter(filter), dst, num_threads);
        }
        return out;
      },
      py::arg("images"), py::arg("size_h"), py::arg("size_w"), py::arg("filter"), py::arg("mode"),
      py::arg("num_threads") = 0,
      "Resize a list of uint8 (H, W[, C]) arrays, Pillow-exact. filter: Pillow's Resampling id; mode: 0 "
      "shortest (resize + center crop), 1 squash. Returns uint8 (N, h, w, C).");

  m.def(
      "to_gray",
      [](py::sequence images) {
        std::vector<py::array> keep;
        auto views = py_bridge::image_views_of(images, keep);
        py::list out;
        for (const auto& v : views) {
          py::array_t<uint8_t> g({py::ssize_t(v.height), py::ssize_t(v.width)});
          uint8_t* dst = g.mutable_data();
          {
            py::gil_scoped_release release;
            to_gray_u8(v, dst);
          }
          out.append(g);
        }
        return out;
      },
      py::arg("images"), "Pillow's convert('L') of each uint8 (H, W[, C]) array; returns a list of (H, W) arrays.");

  m.def(
      "gray_resize",
      [](py::sequence images, int size_h, int size_w, int filter) {
        if (filter < 1 || filter > 5) throw py::value_error("gray_resize: filter must be a resampling filter id 1..5");
        if (size_h < 1 || size_w < 1) throw py::value_error("gray_resize: size must be >= 1");
        std::vector<py::array> keep;
        auto views = py_bridge::image_views_of(images, keep);
        py::array_t<uint8_t> out({py::ssize_t(views.size()), py::ssize_t(size_h), py::ssize_t(size_w)});
        uint8_t* dst = out.mutable_data();
        {
          py::gil_scoped_release release;
          for (size_t i = 0; i < views.size(); ++i)
            gray_resize_u8(views[i], size_h, size_w, ResampleFilter(filter), dst + i * size_t(size_h) * size_w);
        }
        return out;
      },
      py::arg("images"), py::arg("size_h"), py::arg("size_w"), py::arg("filter"),
      "convert('L').resize((size_w, size_h), filter) of each image, fused as the hashes run it. (N, h, w) uint8.");

  m.def("resample_simd_built", &resample_simd_built, "Whether the AVX2 resampling passes were compiled in.");
  m.def("set_resample_simd", &set_resample_simd, py::arg("enabled"),
        "Use (True) or bypass (False) the AVX2 resampling passes, for every thread; returns the previous "
        "setting. For tests of the scalar reference path.");
}
