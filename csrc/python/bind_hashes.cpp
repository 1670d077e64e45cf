// Python bindings: perceptual hashes of decoded images (mmcurate.ops.hashes wraps these).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "mmcurate/hashes.h"
#include "python/image_views.h"
#include "python/quality_arrays.h"
#include "python/registry.h"

namespace py = pybind11;
using namespace mmcurate;

MMCURATE_BINDING(hashes) {
  m.def(
      "hash_images",
      [](py::sequence images, const std::string& kind, int num_threads) {
        const HashKind k = parse_hash_kind(kind);
        std::vector<py::array> keep;
        auto views = py_bridge::image_views_of(images, keep);
        py::array_t<uint64_t> out(py::ssize_t(views.size()));
        uint64_t* dst = out.mutable_data();
        {
          py::gil_scoped_release release;
          hash_batch(views, k, dst, num_threads);
        }
        return out;
      },
      py::arg("images"), py::arg("kind"), py::arg("num_threads") = 0,
      "imagehash-exact 64-bit codes of uint8 (H, W[, C]) arrays; kind: phash, dhash, ahash or whash.");

  m.def(
      "phash_bytes",
      [](py::sequence blobs, bool exact, bool exif, int num_threads, int fast_min_side, int64_t max_pixels,
         bool quality) {
        // Blobs are bytes-like (mmcurate.ops._inputs.as_blob_list); hold buffer views across the GIL release.
        std::vector<py::buffer_info> buffers;
        std::vector<ByteSpan> spans;
        buffers.reserve(py::len(blobs));
        for (size_t i = 0; i < py::len(blobs); ++i) {
          buffers.push_back(py::reinterpret_borrow<py::buffer>(blobs[i]).request());
          const auto& b = buffers.back();
          spans.push_back(ByteSpan{static_cast<const uint8_t*>(b.ptr), size_t(b.size * b.itemsize)});
        }
        HashBytesResult r;
        {
          py::gil_scoped_release release;
          r = phash_bytes(spans, exact, exif, num_threads, fast_min_side, max_pixels, quality);
        }
        const auto n = py::ssize_t(spans.size());
        py::array_t<uint64_t> codes(n);
        py::array_t<int8_t> status(n);
        py::list errors;
        for (py::ssize_t i = 0; i < n; ++i) {
          codes.mutable_at(i) = r.codes[i];
          status.mutable_at(i) = int8_t(r.status[i]);
          errors.append(r.errors[i].empty() ? py::object(py::none()) : py::object(py::str(r.errors[i])));
        }
        if (!quality) return py::tuple(py::make_tuple(codes, status, errors));
        return py::tuple(py::make_tuple(codes, status, errors, py_bridge::quality_arrays(r.quality)));
      },
      py::arg("blobs"), py::arg("exact"), py::arg("exif"), py::arg("num_threads") = 0,
      py::arg("fast_min_side") = int(kPhashFastMinSide), py::arg("max_pixels") = int64_t(kDefaultMaxPixels),
      py::arg("quality") = false,
      "Decode + pHash of bytes-like blobs: (uint64 codes, int8 statuses, errors list[, (float32[n, 7], bool[n]) "
      "quality signals with quality=True]).");

  m.def(
      "hash_gray_small",
      [](py::array_t<uint8_t, py::array::c_style | py::array::forcecast> px, const std::string& kind) {
        const HashKind k = parse_hash_kind(kind);
        const auto h = px.ndim() == 2 ? px.shape(0) : -1, w = px.ndim() == 2 ? px.shape(1) : -1;
        const uint8_t* d = px.data();
        switch (k) {
          case HashKind::phash:
            if (h != 32 || w != 32) throw py::value_error("phash step needs a 32x32 array");
            return phash_from_32x32(d);
          case HashKind::dhash:
            if (h != 8 || w != 9) throw py::value_error("dhash step needs an 8x9 (rows x cols) array");
            return dhash_from_9x8(d);
          case HashKind::ahash:
            if (h != 8 || w != 8) throw py::value_error("ahash step needs an 8x8 array");
            return ahash_from_8x8(d);
          case HashKind::whash:
            if (h != w) throw py::value_error("whash step needs a square array");
            return whash_from_square(d, int(h));
        }
        throw py::value_error("unknown hash kind");
      },
      py::arg("pixels"), py::arg("kind"),
      "The threshold step alone on an already resized L image (tests and GPU parity checks).");
}
