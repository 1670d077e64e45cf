// Python bindings: image-quality signals of decoded images (mmcurate.ops.quality wraps these; the fused
// decode's signals come back through phash_bytes(quality=True) in bind_hashes.cpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "mmcurate/quality.h"
#include "python/image_views.h"
#include "python/quality_arrays.h"
#include "python/registry.h"

namespace py = pybind11;
using namespace mmcurate;

MMCURATE_BINDING(quality) {
  m.def(
      "image_quality_images",
      [](py::sequence images, int num_threads) {
        std::vector<py::array> keep;
        auto views = py_bridge::image_views_of(images, keep);
        std::vector<QualitySignals> q;
        {
          py::gil_scoped_release release;
          q = quality_batch(views, num_threads);
        }
        return py_bridge::quality_arrays(q);
      },
      py::arg("images"), py::arg("num_threads") = 0,
      "Quality signals of uint8 (H, W[, C]) arrays: (float32[n, 7] in QualitySignals order, bool[n] low_information).");
}
