// Python bindings for the CPU decoder: a batch of bytes-like objects in, columnar results out.
// Pixel buffers are handed to numpy without a copy (a capsule owns each decoded vector).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mmcurate/decode.h"
#include "python/registry.h"

namespace mmcurate::py_bridge {

namespace {

// Read-only views of the input blobs, held (with their exporters locked) while the GIL is released.
class BlobViews {
 public:
  explicit BlobViews(const py::sequence& blobs) {
    const size_t n = py::len(blobs);
    views_.reserve(n);
    spans_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      py::object item = blobs[i];
      if (item.is_none()) {
        spans_.push_back({nullptr, 0});
        continue;
      }
      Py_buffer view;
      if (PyObject_GetBuffer(item.ptr(), &view, PyBUF_SIMPLE) != 0) {
        PyErr_Clear();
        throw py::type_error("blobs[" + std::to_string(i) + "]: expected a contiguous bytes-like object, got " +
                             std::string(py::str(py::type::of(item).attr("__name__"))));
      }
      views_.push_back(view);
      spans_.push_back({static_cast<const uint8_t*>(view.buf), size_t(view.len)});
    }
  }
  ~BlobViews() {
    for (auto& v : views_) PyBuffer_Release(&v);
  }
  BlobViews(const BlobViews&) = delete;
  BlobViews& operator=(const BlobViews&) = delete;
  const std::vector<ByteSpan>& spans() const { return spans_; }

 private:
  std::vector<Py_buffer> views_;
  std::vector<ByteSpan> spans_;
};

py::array image_to_numpy(ImageU8&& im) {
  auto* owned = new std::vector<uint8_t>(std::move(im.data));
  py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<uint8_t>*>(p); });
  const py::ssize_t h = im.height, w = im.width, c = im.channels;
  return py::array_t<uint8_t>({h, w, c}, {w * c, c, py::ssize_t(1)}, owned->data(), owner);
}

ColorMode parse_mode(int mode) {
  if (mode < 0 || mode > 2) throw py::value_error("mode must be 0 (rgb), 1 (gray) or 2 (gray_luma)");
  return static_cast<ColorMode>(mode);
}

// (status int8[n], errors list, formats list, sizes int32[n,2] as (h, w), orientation int8[n])
py::tuple metadata(const std::vector<DecodeResult>& results) {
  const py::ssize_t n = py::ssize_t(results.size());
  py::array_t<int8_t> status(n), orientation(n);
  py::array_t<int32_t> sizes({n, py::ssize_t(2)});
  auto st = status.mutable_unchecked<1>();
  auto ori = orientation.mutable_unchecked<1>();
  auto sz = sizes.mutable_unchecked<2>();
  py::list errors(n), formats(n);
  for (py::ssize_t i = 0; i < n; ++i) {
    const DecodeResult& r = results[size_t(i)];
    st(i) = static_cast<int8_t>(r.status);
    ori(i) = static_cast<int8_t>(r.exif_orientation);
    sz(i, 0) = r.source_height;
    sz(i, 1) = r.source_width;
    errors[size_t(i)] = r.status == Status::ok ? py::none() : py::object(py::str(r.error));
    formats[size_t(i)] = r.format == ImageFormat::unknown ? py::none() : py::object(py::str(format_name(r.format)));
  }
  return py::make_tuple(status, errors, formats, sizes, orientation);
}

}  // namespace

}  // namespace mmcurate::py_bridge

MMCURATE_BINDING(decode) {
  using namespace mmcurate;
  using namespace mmcurate::py_bridge;
  m.def(
      "decode_images",
      [](const py::sequence& blobs, int mode, int min_height, int min_width, int64_t max_pixels, bool exif, bool fast,
         int num_threads) {
        DecodeOptions opts;
        opts.mode = parse_mode(mode);
        if (min_height < 0 || min_width < 0) throw py::value_error("min_height/min_width must be >= 0");
        opts.min_height = min_height;
        opts.min_width = min_width;
        opts.max_pixels = max_pixels;
        opts.apply_exif_orientation = exif;
        opts.fast_dct = fast;
        BlobViews views(blobs);
        std::vector<DecodeResult> results;
        {
          py::gil_scoped_release release;
          results = decode_batch(views.spans(), opts, num_threads);
        }
        py::list images(results.size());
        py::array_t<int8_t> scales(py::ssize_t(results.size()));
        auto sc = scales.mutable_unchecked<1>();
        for (size_t i = 0; i < results.size(); ++i) {
          sc(py::ssize_t(i)) = int8_t(results[i].dct_scale);
          images[i] = results[i].status == Status::ok ? py::object(image_to_numpy(std::move(results[i].image)))
                                                      : py::object(py::none());
        }
        return py::make_tuple(images, metadata(results), scales);
      },
      py::arg("blobs"), py::arg("mode"), py::arg("min_height"), py::arg("min_width"), py::arg("max_pixels"),
      py::arg("exif"), py::arg("fast"), py::arg("num_threads"),
      "Decodes a batch of JPEG/PNG/WebP blobs on the CPU. Returns (images, (status, errors, formats, sizes, "
      "orientation), dct_scales); images[i] is an HxWxC uint8 array or None.");
  m.def(
      "probe_images",
      [](const py::sequence& blobs) {
        BlobViews views(blobs);
        std::vector<DecodeResult> results(views.spans().size());
        {
          py::gil_scoped_release release;
          for (size_t i = 0; i < results.size(); ++i)
            results[i] = probe_image(views.spans()[i].data, views.spans()[i].size);
        }
        return metadata(results);
      },
      py::arg("blobs"), "Header-only probe: (status, errors, formats, sizes, orientation).");
}
