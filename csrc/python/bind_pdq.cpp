// Python bindings: PDQ-256 of decoded images and fused from bytes (mmcurate.ops.pdq256 wraps these).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>

#include "mmcurate/pdq.h"
#include "python/image_views.h"
#include "python/registry.h"

namespace py = pybind11;
using namespace mmcurate;

namespace {

// codes: (n, 32) or (n, 8, 32) uint8.
py::array_t<uint8_t> codes_array(py::ssize_t n, bool dihedral) {
  if (dihedral) return py::array_t<uint8_t>({n, py::ssize_t(kPdqDihedralVariants), py::ssize_t(kPdqCodeBytes)});
  return py::array_t<uint8_t>({n, py::ssize_t(kPdqCodeBytes)});
}

}  // namespace

MMCURATE_BINDING(pdq) {
  m.def(
      "pdq_images",
      [](py::sequence images, bool dihedral, int num_threads) {
        std::vector<py::array> keep;
        auto views = py_bridge::image_views_of(images, keep);
        const auto n = py::ssize_t(views.size());
        auto codes = codes_array(n, dihedral);
        py::array_t<int32_t> quality(n);
        uint8_t* c = codes.mutable_data();
        int32_t* q = quality.mutable_data();
        {
          py::gil_scoped_release release;
          pdq_batch(views, dihedral, c, q, num_threads);
        }
        return py::make_tuple(codes, quality);
      },
      py::arg("images"), py::arg("dihedral") = false, py::arg("num_threads") = 0,
      "pdqhash-exact PDQ of uint8 (H, W[, C]) arrays: (codes uint8[n, 32] or [n, 8, 32], quality int32[n]).");

  m.def(
      "pdq_bytes",
      [](py::sequence blobs, bool exact, bool dihedral, bool exif, int num_threads, int fast_min_side,
         int64_t max_pixels, bool with_phash, bool pixel_variants, bool with_detail, int luma_side) {
        // Blobs are bytes-like (mmcurate.ops._inputs.as_blob_list); hold buffer views across the GIL release.
        std::vector<py::buffer_info> buffers;
        std::vector<ByteSpan> spans;
        buffers.reserve(py::len(blobs));
        for (size_t i = 0; i < py::len(blobs); ++i) {
          buffers.push_back(py::reinterpret_borrow<py::buffer>(blobs[i]).request());
          const auto& b = buffers.back();
          spans.push_back(ByteSpan{static_cast<const uint8_t*>(b.ptr), size_t(b.size * b.itemsize)});
        }
        PdqBytesResult r;
        {
          py::gil_scoped_release release;
          r = pdq_bytes(spans, exact, dihedral, exif, num_threads, fast_min_side, max_pixels, with_phash,
                        pixel_variants, with_detail, luma_side);
        }
        const auto n = py::ssize_t(spans.size());
        auto codes = codes_array(n, dihedral);
        if (!r.codes.empty()) std::memcpy(codes.mutable_data(), r.codes.data(), r.codes.size());
        py::array_t<int32_t> quality(n);
        py::array_t<int8_t> status(n);
        py::list errors;
        for (py::ssize_t i = 0; i < n; ++i) {
          quality.mutable_at(i) = r.quality[i];
          status.mutable_at(i) = int8_t(r.status[i]);
          errors.append(r.errors[i].empty() ? py::object(py::none()) : py::object(py::str(r.errors[i])));
        }
        py::object phash = py::none();
        if (with_phash) {
          const py::ssize_t k = pixel_variants ? kPdqDihedralVariants : 1;
          py::array_t<uint64_t> p(pixel_variants ? std::vector<py::ssize_t>{n, k} : std::vector<py::ssize_t>{n});
          if (n) std::memcpy(p.mutable_data(), r.phash.data(), size_t(n * k) * sizeof(uint64_t));
          phash = p;
        }
        py::object detail = py::none();
        if (with_detail) {
          py::array_t<uint8_t> d({n, py::ssize_t(kDetailBytes)});
          if (n) std::memcpy(d.mutable_data(), r.detail.data(), r.detail.size());
          detail = d;
        }
        py::object luma = py::none();
        if (luma_side > 0) {
          py::list thumbs;
          for (py::ssize_t i = 0; i < n; ++i) {
            if (r.luma[i].empty()) {
              thumbs.append(py::none());
              continue;
            }
            py::array_t<uint8_t> t({py::ssize_t(r.luma_height[i]), py::ssize_t(r.luma_width[i])});
            std::memcpy(t.mutable_data(), r.luma[i].data(), r.luma[i].size());
            thumbs.append(t);
          }
          luma = thumbs;
        }
        return py::make_tuple(codes, quality, status, errors, phash, detail, luma);
      },
      py::arg("blobs"), py::arg("exact"), py::arg("dihedral"), py::arg("exif"), py::arg("num_threads") = 0,
      py::arg("fast_min_side") = int(kPdqFastMinSide), py::arg("max_pixels") = int64_t(kDefaultMaxPixels),
      py::arg("with_phash") = false, py::arg("pixel_variants") = false, py::arg("with_detail") = false,
      py::arg("luma_side") = 0,
      "Decode + PDQ of bytes-like blobs: (codes uint8, quality int32, status int8, errors list, "
      "pHash uint64 [n] ([n, 8] with pixel_variants) or None, local-detail grid uint8[n, 512] or None, "
      "luma thumbnails (uint8[h, w] or None where decoding failed, longer side <= luma_side) or None).");
}
