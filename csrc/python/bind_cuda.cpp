// Python side of the CUDA kernels, compiled in every build (a CPU-only build links csrc/cuda/stubs.cpp,
// whose functions raise an error that says how to rebuild).
//
//  - DeviceArray: an owning device array (cudaMalloc) that speaks __cuda_array_interface__ v3 and DLPack,
//    so torch / CuPy / numba consume it without copies and without this module linking any of them.
//  - Inputs: any object with __cuda_array_interface__ (torch.cuda tensors, CuPy), any DLPack producer on a
//    CUDA device, a DeviceArray, or host arrays (uploaded).
//  - Streams: an op runs on the caller's stream when one is given (stream=<int cudaStream_t>), else on a
//    stream of its own that it synchronises before returning. Host results are always complete.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mmcurate/cuda_api.h"
#include "mmcurate/pdq.h"
#include "mmcurate/quality.h"
#include "python/dlpack_abi.h"
#include "python/quality_arrays.h"
#include "python/registry.h"

namespace mmcurate::py_bridge {
namespace {

namespace py = pybind11;
using cuda::StreamHandle;
using OptStream = std::optional<StreamHandle>;

// ------------------------------------------------------------------ element types
struct DType {
  char kind = 'u';  // numpy kind: 'u', 'i', 'f', 'b'
  int itemsize = 1;
  bool operator==(const DType& o) const { return kind == o.kind && itemsize == o.itemsize; }
  std::string typestr() const { return std::string(itemsize == 1 ? "|" : "<") + kind + std::to_string(itemsize); }
  std::string name() const {
    if (kind == 'b') return "bool";
    return std::string(kind == 'u' ? "uint" : kind == 'i' ? "int" : "float") + std::to_string(8 * itemsize);
  }
};

constexpr DType kU8{'u', 1};
constexpr DType kU64{'u', 8};

DType parse_typestr(const std::string& s, const char* arg) {
  if (s.size() < 3 || (s[0] != '<' && s[0] != '|' && s[0] != '=' && s[0] != '>'))
    throw py::type_error(std::string(arg) + ": unsupported array typestr '" + s + "'");
  DType t{s[1], std::stoi(s.substr(2))};
  if (s[0] == '>' && t.itemsize > 1) throw py::type_error(std::string(arg) + ": big-endian arrays are not supported");
  if (t.kind != 'u' && t.kind != 'i' && t.kind != 'f' && t.kind != 'b')
    throw py::type_error(std::string(arg) + ": unsupported element type '" + s + "'");
  return t;
}

DType from_dlpack_dtype(const dlpack::DataType& t, const char* arg) {
  if (t.lanes != 1 || t.bits % 8 != 0)
    throw py::type_error(std::string(arg) + ": vector DLPack dtypes are not supported");
  char kind = t.code == dlpack::kUInt    ? 'u'
              : t.code == dlpack::kInt   ? 'i'
              : t.code == dlpack::kFloat ? 'f'
              : t.code == dlpack::kBool  ? 'b'
                                         : '?';
  if (kind == '?') throw py::type_error(std::string(arg) + ": unsupported DLPack dtype code " + std::to_string(t.code));
  return DType{kind, t.bits / 8};
}

dlpack::DataType to_dlpack_dtype(const DType& t) {
  uint8_t code = t.kind == 'u'   ? dlpack::kUInt
                 : t.kind == 'i' ? dlpack::kInt
                 : t.kind == 'f' ? dlpack::kFloat
                                 : dlpack::kBool;
  return dlpack::DataType{code, uint8_t(8 * t.itemsize), 1};
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

py::tuple to_tuple(const std::vector<int64_t>& v) {
  py::tuple t(v.size());
  for (size_t i = 0; i < v.size(); ++i) t[i] = v[i];
  return t;
}

// ------------------------------------------------------------------ DeviceArray
// Owns (a share of) one device allocation holding a packed row-major array.
struct DeviceArray {
  std::shared_ptr<cuda::DeviceBuffer> buffer;
  std::vector<int64_t> shape;
  DType dtype;
  int device = 0;
  bool pending = false;  // the producing work was queued on the caller's `stream` and may still run
  StreamHandle stream = 0;

  int64_t size() const { return numel(shape); }
  size_t nbytes() const { return size_t(size()) * dtype.itemsize; }
  void* data() const { return buffer ? buffer->data() : nullptr; }

  void wait_ready() {
    if (pending) {
      py::gil_scoped_release nogil;
      cuda::stream_synchronize(stream);
    }
    pending = false;
  }

  py::array numpy() {
    wait_ready();
    std::vector<py::ssize_t> dims(shape.begin(), shape.end());
    py::array out(py::dtype(dtype.typestr()), dims);
    if (nbytes()) {
      py::gil_scoped_release nogil;
      cuda::StreamScope scope(false);
      cuda::copy_to_host(out.mutable_data(), data(), nbytes(), scope.get());
    }
    return out;
  }

  py::dict cuda_array_interface() const {
    py::dict d;
    d["shape"] = to_tuple(shape);
    d["typestr"] = dtype.typestr();
    d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(data()), false);
    d["strides"] = py::none();
    d["version"] = 3;
    // v3: None means "ready"; otherwise the consumer orders itself after this stream (0 is spelled 1).
    d["stream"] = pending ? py::int_(stream == 0 ? StreamHandle(1) : stream) : py::object(py::none());
    return d;
  }
};

DeviceArray make_device_array(std::shared_ptr<cuda::DeviceBuffer> buf, std::vector<int64_t> shape, DType dtype,
                              const cuda::StreamScope& scope) {
  DeviceArray a;
  a.device = buf->device();
  a.buffer = std::move(buf);
  a.shape = std::move(shape);
  a.dtype = dtype;
  a.pending = !scope.owned();  // an owned stream is synchronised before the op returns
  a.stream = scope.owned() ? 0 : scope.get();
  return a;
}

// DLPack export: the capsule's manager keeps the buffer alive as long as the consumer holds the tensor.
struct DlpackExport {
  std::shared_ptr<cuda::DeviceBuffer> buffer;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  dlpack::ManagedTensor managed{};
};

void dlpack_deleter(dlpack::ManagedTensor* self) { delete static_cast<DlpackExport*>(self->manager_ctx); }

void dlpack_capsule_destructor(PyObject* capsule) {
  // Called when the capsule dies; if no consumer took ownership (renamed it), free the tensor here.
  if (PyCapsule_IsValid(capsule, dlpack::kCapsuleName)) {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    auto* t = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule, dlpack::kCapsuleName));
    if (t && t->deleter) t->deleter(t);
    PyErr_Restore(type, value, traceback);
  }
}

py::capsule to_dlpack(DeviceArray& a, py::object stream, py::object max_version, py::object dl_device,
                      py::object copy) {
  (void)max_version;  // we produce the unversioned capsule, which every consumer accepts
  if (!dl_device.is_none()) {
    auto dev = dl_device.cast<std::pair<int, int>>();
    if (dev.first != dlpack::kCUDA || dev.second != a.device)
      throw py::buffer_error("DeviceArray lives on CUDA device " + std::to_string(a.device) +
                             "; export to another device is not supported (use .numpy() for host memory)");
  }
  // The consumer's stream (-1: it does its own synchronisation). We complete pending work either way,
  // which is always correct and costs nothing once the op has finished.
  if (stream.is_none() || stream.cast<int64_t>() != -1) a.wait_ready();
  auto* ctx = new DlpackExport;
  ctx->buffer = a.buffer;
  ctx->shape = a.shape;
  ctx->strides.assign(a.shape.size(), 1);
  for (int d = int(a.shape.size()) - 2; d >= 0; --d) ctx->strides[d] = ctx->strides[d + 1] * a.shape[d + 1];
  if (!copy.is_none() && copy.cast<bool>()) {
    auto fresh = std::make_shared<cuda::DeviceBuffer>(a.nbytes());
    cuda::StreamScope scope(false);
    cuda::copy_on_device(fresh->data(), a.data(), a.nbytes(), scope.get());
    scope.synchronize();
    ctx->buffer = fresh;
  }
  dlpack::Tensor& t = ctx->managed.dl_tensor;
  t.data = ctx->buffer->data();
  t.device = dlpack::Device{dlpack::kCUDA, a.device};
  t.ndim = int32_t(a.shape.size());
  t.dtype = to_dlpack_dtype(a.dtype);
  t.shape = ctx->shape.data();
  t.strides = ctx->strides.data();
  t.byte_offset = 0;
  ctx->managed.manager_ctx = ctx;
  ctx->managed.deleter = dlpack_deleter;
  PyObject* cap = PyCapsule_New(&ctx->managed, dlpack::kCapsuleName, dlpack_capsule_destructor);
  if (!cap) {
    delete ctx;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::capsule>(cap);
}

DeviceArray upload_host(py::handle obj, const char* arg, const cuda::StreamScope& scope) {
  auto arr = py::array::ensure(obj, py::array::c_style);
  if (!arr)
    throw py::type_error(std::string(arg) + ": expected an array (host or CUDA), got " +
                         std::string(py::str(py::type::of(obj))));
  DType dt = parse_typestr(py::str(arr.dtype().attr("str")), arg);
  std::vector<int64_t> shape(arr.shape(), arr.shape() + arr.ndim());
  auto buf = std::make_shared<cuda::DeviceBuffer>(size_t(arr.nbytes()));
  {
    py::gil_scoped_release nogil;
    cuda::copy_to_device(buf->data(), arr.data(), size_t(arr.nbytes()), scope.get());
    // Pageable memory is staged before cudaMemcpyAsync returns, but numpy may free `arr` once we drop
    // it; synchronising here keeps the contract simple for one-off uploads.
    cuda::stream_synchronize(scope.get());
  }
  DeviceArray a;
  a.device = buf->device();
  a.buffer = std::move(buf);
  a.shape = std::move(shape);
  a.dtype = dt;
  return a;
}

// ------------------------------------------------------------------ inputs
// A device-resident, packed row-major view of an input, valid while this object lives.
struct DeviceInput {
  const void* data = nullptr;
  std::vector<int64_t> shape;
  DType dtype;
  bool was_host = false;                       // the caller passed host memory (results go back as numpy)
  py::object keepalive;                        // producer object or DLPack capsule
  std::shared_ptr<cuda::DeviceBuffer> buffer;  // our upload or packed copy, or a DeviceArray's buffer
  int64_t numel() const { return py_bridge::numel(shape); }
};

bool is_device_array(py::handle obj) { return py::isinstance<DeviceArray>(obj); }

std::pair<int, int> dlpack_device_of(py::handle obj) {
  if (!py::hasattr(obj, "__dlpack_device__")) return {0, 0};
  try {
    return obj.attr("__dlpack_device__")().cast<std::pair<int, int>>();
  } catch (const py::error_already_set&) {
    return {0, 0};
  }
}

// The CUDA device an input lives on, or -1 for host memory.
int device_of(py::handle obj) {
  if (is_device_array(obj)) return obj.cast<DeviceArray&>().device;
  if (py::hasattr(obj, "__cuda_array_interface__")) {
    py::dict cai = obj.attr("__cuda_array_interface__");
    auto ptr = py::tuple(cai["data"])[0].cast<uintptr_t>();
    return ptr ? cuda::pointer_device(reinterpret_cast<const void*>(ptr)) : -1;
  }
  auto dev = dlpack_device_of(obj);
  if (dev.first == dlpack::kCUDA || dev.first == dlpack::kCUDAManaged) return dev.second;
  return -1;
}

void make_packed(DeviceInput& in, const std::vector<int64_t>& byte_strides, const cuda::StreamScope& scope) {
  int64_t expect = in.dtype.itemsize;
  bool packed = true;
  for (int d = int(in.shape.size()) - 1; d >= 0; --d) {
    if (in.shape[d] != 1 && byte_strides[d] != expect) packed = false;
    expect *= in.shape[d];
  }
  if (packed || in.numel() == 0) return;
  auto buf = std::make_shared<cuda::DeviceBuffer>(size_t(in.numel()) * in.dtype.itemsize);
  cuda::gather_strided(buf->data(), in.data, int(in.shape.size()), in.shape.data(), byte_strides.data(),
                       in.dtype.itemsize, scope.get());
  in.data = buf->data();
  in.buffer = std::move(buf);
}

DeviceInput from_cuda_array_interface(py::handle obj, const char* arg, const cuda::StreamScope& scope) {
  py::dict cai = obj.attr("__cuda_array_interface__");
  DeviceInput in;
  in.keepalive = py::reinterpret_borrow<py::object>(obj);
  in.shape = py::tuple(cai["shape"]).cast<std::vector<int64_t>>();
  in.dtype = parse_typestr(cai["typestr"].cast<std::string>(), arg);
  in.data = reinterpret_cast<const void*>(py::tuple(cai["data"])[0].cast<uintptr_t>());
  if (cai.contains("mask") && !cai["mask"].is_none())
    throw py::type_error(std::string(arg) + ": masked CUDA arrays are not supported");
  if (cai.contains("stream") && !cai["stream"].is_none())
    cuda::stream_wait(scope.get(), cai["stream"].cast<StreamHandle>());  // v3: order after the producer
  std::vector<int64_t> strides;
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    strides = py::tuple(cai["strides"]).cast<std::vector<int64_t>>();
  } else {
    strides.assign(in.shape.size(), in.dtype.itemsize);
    for (int d = int(in.shape.size()) - 2; d >= 0; --d) strides[d] = strides[d + 1] * in.shape[d + 1];
  }
  make_packed(in, strides, scope);
  return in;
}

DeviceInput from_dlpack(py::handle obj, const char* arg, const cuda::StreamScope& scope) {
  // The producer orders its work before our stream (DLPack: 1 is the legacy default stream, 0 is invalid).
  StreamHandle consumer = scope.get() == 0 ? 1 : scope.get();
  py::object cap = obj.attr("__dlpack__")(py::arg("stream") = consumer);
  auto* mt = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), dlpack::kCapsuleName));
  if (!mt) throw py::error_already_set();
  const dlpack::Tensor& t = mt->dl_tensor;
  DeviceInput in;
  in.keepalive = cap;  // unconsumed capsule: its destructor calls the producer's deleter when we are done
  in.dtype = from_dlpack_dtype(t.dtype, arg);
  in.shape.assign(t.shape, t.shape + t.ndim);
  in.data = static_cast<const uint8_t*>(t.data) + t.byte_offset;
  std::vector<int64_t> strides(t.ndim);
  if (t.strides) {
    for (int d = 0; d < t.ndim; ++d) strides[d] = t.strides[d] * in.dtype.itemsize;
  } else if (t.ndim > 0) {
    strides[t.ndim - 1] = in.dtype.itemsize;
    for (int d = t.ndim - 2; d >= 0; --d) strides[d] = strides[d + 1] * in.shape[d + 1];
  }
  make_packed(in, strides, scope);
  return in;
}

DeviceInput to_device_input(py::handle obj, const char* arg, const cuda::StreamScope& scope) {
  if (is_device_array(obj)) {
    auto& a = obj.cast<DeviceArray&>();
    if (a.pending && a.stream != scope.get()) cuda::stream_wait(scope.get(), a.stream);
    DeviceInput in;
    in.keepalive = py::reinterpret_borrow<py::object>(obj);
    in.buffer = a.buffer;
    in.data = a.data();
    in.shape = a.shape;
    in.dtype = a.dtype;
    return in;
  }
  if (py::hasattr(obj, "__cuda_array_interface__")) return from_cuda_array_interface(obj, arg, scope);
  auto dev = dlpack_device_of(obj);
  if (dev.first == dlpack::kCUDA || dev.first == dlpack::kCUDAManaged) return from_dlpack(obj, arg, scope);
  DeviceArray up = upload_host(obj, arg, scope);
  DeviceInput in;
  in.was_host = true;
  in.buffer = up.buffer;
  in.data = up.data();
  in.shape = up.shape;
  in.dtype = up.dtype;
  return in;
}

// Runs the op on the device its first input lives on, restoring the caller's device afterwards.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    previous_ = cuda::require_device();
    if (device >= 0 && device != previous_) {
      cuda::set_device(device);
      switched_ = true;
    }
  }
  ~DeviceScope() {
    if (switched_) {
      try {
        cuda::set_device(previous_);
      } catch (...) {
      }
    }
  }

 private:
  int previous_ = 0;
  bool switched_ = false;
};

template <typename T>
py::array_t<T> to_numpy(std::vector<T>&& v, std::vector<py::ssize_t> shape) {
  auto* owner = new std::vector<T>(std::move(v));
  py::capsule free_when_done(owner, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(shape, owner->data(), free_when_done);
}

// ------------------------------------------------------------------ Hamming
// Words of 64 bits per code. Accepted layouts, as the CPU op: uint64 or int64 (same bits) of shape (n,)
// or (n, words), and packed bytes uint8 (n, 8) or (n, 32) read as little-endian uint64.
int code_words(const DeviceInput& in, const char* arg) {
  if (in.dtype == kU8 && in.shape.size() == 2 && (in.shape[1] == 8 || in.shape[1] == 32)) return int(in.shape[1] / 8);
  if (!(in.dtype == kU64) && !(in.dtype == DType{'i', 8}))
    throw py::type_error(std::string(arg) + ": expected uint64 or int64 codes (or (n, 8) uint8), got " +
                         in.dtype.name());
  if (in.shape.size() == 1) return 1;
  if (in.shape.size() == 2) return int(in.shape[1]);
  throw py::value_error(std::string(arg) + ": expected shape (n,) or (n, words), got ndim " +
                        std::to_string(in.shape.size()));
}

py::tuple hamming_pairs(py::object codes, int max_distance, OptStream stream) {
  DeviceScope device(device_of(codes));
  cuda::StreamScope scope(stream.has_value(), stream.value_or(0));
  DeviceInput in = to_device_input(codes, "codes", scope);
  int words = code_words(in, "codes");
  std::vector<int64_t> pairs;
  std::vector<uint8_t> dist;
  {
    py::gil_scoped_release nogil;
    cuda::hamming_pairs(static_cast<const uint64_t*>(in.data), in.shape[0], words, max_distance, scope.get(), &pairs,
                        &dist);
  }
  py::ssize_t m = py::ssize_t(dist.size());
  return py::make_tuple(to_numpy(std::move(pairs), {m, 2}), to_numpy(std::move(dist), {m}));
}

py::tuple hamming_knn(py::object codes, int k, py::object queries, OptStream stream) {
  DeviceScope device(device_of(codes));
  cuda::StreamScope scope(stream.has_value(), stream.value_or(0));
  DeviceInput in = to_device_input(codes, "codes", scope);
  int words = code_words(in, "codes");
  const uint64_t* q = nullptr;
  int64_t nq = in.shape[0];
  DeviceInput qin;
  if (!queries.is_none()) {
    qin = to_device_input(queries, "queries", scope);
    if (code_words(qin, "queries") != words) throw py::value_error("queries must have as many words per code as codes");
    q = static_cast<const uint64_t*>(qin.data);
    nq = qin.shape[0];
  }
  if (k < 0) throw py::value_error("k must be >= 0");
  std::vector<int32_t> dist(size_t(nq) * k);
  std::vector<int64_t> idx(size_t(nq) * k);
  {
    py::gil_scoped_release nogil;
    cuda::hamming_knn(static_cast<const uint64_t*>(in.data), in.shape[0], q, nq, words, k, scope.get(), dist.data(),
                      idx.data());
  }
  return py::make_tuple(to_numpy(std::move(dist), {py::ssize_t(nq), py::ssize_t(k)}),
                        to_numpy(std::move(idx), {py::ssize_t(nq), py::ssize_t(k)}));
}

// ------------------------------------------------------------------ images (resize, hashes)
// Decoded images on the device: one (N, H, W[, C]) array, or a sequence of (H, W[, C]) arrays of any sizes.
struct ImageSet {
  std::vector<DeviceInput> inputs;  // keep the sources alive
  std::vector<cuda::DeviceImageRef> refs;
  bool all_host = true;
};

cuda::DeviceImageRef image_ref(const uint8_t* data, const std::vector<int64_t>& dims, const std::string& where) {
  const size_t nd = dims.size();
  if (nd != 2 && nd != 3) throw py::value_error(where + ": expected shape (H, W) or (H, W, C)");
  cuda::DeviceImageRef r{data, int(dims[0]), int(dims[1]), nd == 3 ? int(dims[2]) : 1};
  if (r.height < 1 || r.width < 1) throw py::value_error(where + ": empty image");
  if (r.channels < 1 || r.channels > 4) throw py::value_error(where + ": channels must be 1, 2, 3 or 4");
  return r;
}

ImageSet gather_images(py::handle images, const cuda::StreamScope& scope) {
  ImageSet set;
  if (py::isinstance<py::list>(images) || py::isinstance<py::tuple>(images)) {
    auto seq = py::reinterpret_borrow<py::sequence>(images);
    for (size_t i = 0; i < seq.size(); ++i) {
      const std::string where = "images[" + std::to_string(i) + "]";
      DeviceInput in = to_device_input(seq[i], where.c_str(), scope);
      if (!(in.dtype == kU8)) throw py::type_error(where + ": expected uint8 pixels, got " + in.dtype.name());
      set.refs.push_back(image_ref(static_cast<const uint8_t*>(in.data), in.shape, where));
      set.all_host = set.all_host && in.was_host;
      set.inputs.push_back(std::move(in));
    }
    return set;
  }
  DeviceInput in = to_device_input(images, "images", scope);
  if (!(in.dtype == kU8)) throw py::type_error("images: expected uint8 pixels, got " + in.dtype.name());
  if (in.shape.size() != 3 && in.shape.size() != 4)
    throw py::value_error("images: a batch array must have shape (N, H, W) or (N, H, W, C)");
  const std::vector<int64_t> dims(in.shape.begin() + 1, in.shape.end());
  const int64_t per_image = numel(dims);
  for (int64_t i = 0; i < in.shape[0]; ++i)
    set.refs.push_back(
        image_ref(static_cast<const uint8_t*>(in.data) + i * per_image, dims, "images[" + std::to_string(i) + "]"));
  set.all_host = in.was_host;
  set.inputs.push_back(std::move(in));
  return set;
}

int device_of_images(py::handle images) {
  if (py::isinstance<py::list>(images) || py::isinstance<py::tuple>(images)) {
    auto seq = py::reinterpret_borrow<py::sequence>(images);
    return seq.size() ? device_of(seq[0]) : -1;
  }
  return device_of(images);
}

// Returns (DeviceArray (n, oh, ow, C), inputs_were_host).
py::tuple resize_images(py::object images, int size_h, int size_w, int filter, int mode, OptStream stream) {
  DeviceScope device(device_of_images(images));
  cuda::StreamScope scope(stream.has_value(), stream.value_or(0));
  if (filter < 0 || filter > 5) throw py::value_error("filter must be a Pillow resampling id 0..5");
  if (mode != 0 && mode != 1) throw py::value_error("mode must be 0 (shortest) or 1 (squash)");
  ImageSet set = gather_images(images, scope);
  const auto rmode = ResizeMode(mode);
  int oh = size_h, ow = size_w, channels = 3;
  if (!set.refs.empty()) {
    const ResizeGeometry g = resize_geometry(set.refs[0].height, set.refs[0].width, rmode, size_h, size_w);
    oh = g.window.height;
    ow = g.window.width;
    channels = set.refs[0].channels;
  }
  const int64_t n = int64_t(set.refs.size());
  auto out = std::make_shared<cuda::DeviceBuffer>(size_t(n) * oh * ow * channels);
  {
    py::gil_scoped_release nogil;
    cuda::resize_batch(set.refs, rmode, size_h, size_w, ResampleFilter(filter), out->as<uint8_t>(), scope.get());
  }
  return py::make_tuple(make_device_array(std::move(out), {n, oh, ow, channels}, kU8, scope), set.all_host);
}

py::array_t<uint64_t> hash_images(py::object images, const std::string& kind, OptStream stream) {
  const HashKind hk = parse_hash_kind(kind);
  DeviceScope device(device_of_images(images));
  cuda::StreamScope scope(stream.has_value(), stream.value_or(0));
  ImageSet set = gather_images(images, scope);
  std::vector<uint64_t> codes(set.refs.size());
  {
    py::gil_scoped_release nogil;
    cuda::hash_batch(set.refs, hk, codes.data(), scope.get());
  }
  const py::ssize_t n = py::ssize_t(codes.size());
  return to_numpy(std::move(codes), {n});
}

// Returns (codes uint8[n, 32] or [n, 8, 32], quality int32[n]).
py::tuple pdq_images(py::object images, bool dihedral, OptStream stream) {
  DeviceScope device(device_of_images(images));
  cuda::StreamScope scope(stream.has_value(), stream.value_or(0));
  ImageSet set = gather_images(images, scope);
  const int variants = dihedral ? kPdqDihedralVariants : 1;
  std::vector<uint8_t> codes(set.refs.size() * variants * kPdqCodeBytes);
  std::vector<int32_t> quality(set.refs.size());
  {
    py::gil_scoped_release nogil;
    cuda::pdq_batch(set.refs, dihedral, codes.data(), quality.data(), scope.get());
  }
  const py::ssize_t n = py::ssize_t(quality.size());
  std::vector<py::ssize_t> shape{n, py::ssize_t(kPdqCodeBytes)};
  if (dihedral) shape = {n, py::ssize_t(variants), py::ssize_t(kPdqCodeBytes)};
  return py::make_tuple(to_numpy(std::move(codes), shape), to_numpy(std::move(quality), {n}));
}

// Returns (float32[n, 7] signals, bool[n] low_information), as the CPU binding.
py::tuple image_quality(py::object images, OptStream stream) {
  DeviceScope device(device_of_images(images));
  cuda::StreamScope scope(stream.has_value(), stream.value_or(0));
  ImageSet set = gather_images(images, scope);
  std::vector<QualitySignals> q(set.refs.size());
  {
    py::gil_scoped_release nogil;
    cuda::quality_batch(set.refs, q.data(), scope.get());
  }
  return quality_arrays(q);
}

// ------------------------------------------------------------------ decode
struct BlobList {
  std::vector<py::buffer_info> views;  // keep the Python buffers pinned while the GIL is released
  std::vector<ByteSpan> spans;
};

BlobList blob_spans(const py::sequence& blobs) {
  BlobList out;
  out.views.reserve(blobs.size());
  out.spans.reserve(blobs.size());
  for (py::handle b : blobs) {
    auto info = py::reinterpret_borrow<py::buffer>(b).request();
    if (info.ndim > 1) throw py::type_error("blobs must be 1-D byte buffers");
    out.spans.push_back(ByteSpan{static_cast<const uint8_t*>(info.ptr), size_t(info.size * info.itemsize)});
    out.views.push_back(std::move(info));
  }
  return out;
}

py::tuple decode_images(py::sequence blobs, int mode, int min_width, int min_height, int64_t max_pixels, bool exif,
                        bool fast_dct, OptStream stream, int num_threads) {
  DeviceScope device(-1);
  cuda::StreamScope scope(stream.has_value(), stream.value_or(0));
  BlobList list = blob_spans(blobs);
  DecodeOptions opts;
  if (mode < 0 || mode > 2) throw py::value_error("mode must be 0 (rgb), 1 (gray) or 2 (gray_luma)");
  opts.mode = ColorMode(mode);
  opts.min_width = min_width;
  opts.min_height = min_height;
  opts.max_pixels = max_pixels;
  opts.apply_exif_orientation = exif;
  opts.fast_dct = fast_dct;
  std::vector<cuda::GpuDecodeResult> results;
  {
    py::gil_scoped_release nogil;
    results = cuda::decode_batch(list.spans, opts, scope.get(), num_threads);
  }
  const size_t n = results.size();
  py::list images, errors;
  std::vector<int8_t> status(n), formats(n), orientation(n);
  std::vector<int32_t> sizes(2 * n);
  std::vector<uint8_t> on_gpu(n);
  for (size_t i = 0; i < n; ++i) {
    auto& r = results[i];
    status[i] = int8_t(r.status);
    formats[i] = int8_t(r.format);
    orientation[i] = int8_t(r.exif_orientation);
    sizes[2 * i] = r.source_height;  // (h, w), as the CPU op reports them
    sizes[2 * i + 1] = r.source_width;
    on_gpu[i] = r.decoded_on_gpu;
    errors.append(r.error);
    if (r.status == Status::ok && r.image.buffer) {
      images.append(make_device_array(r.image.buffer, {r.image.height, r.image.width, r.image.channels}, kU8, scope));
    } else {
      images.append(py::none());
    }
  }
  return py::make_tuple(images, to_numpy(std::move(status), {py::ssize_t(n)}), errors,
                        to_numpy(std::move(formats), {py::ssize_t(n)}),
                        to_numpy(std::move(sizes), {py::ssize_t(n), 2}),  // (h, w)
                        to_numpy(std::move(orientation), {py::ssize_t(n)}),
                        to_numpy(std::move(on_gpu), {py::ssize_t(n)}).attr("astype")("bool"));
}

// Returns (codes uint64[n], status int8[n], errors list[str]).
py::tuple phash_bytes(py::sequence blobs, bool exact, bool exif, OptStream stream, int num_threads) {
  DeviceScope device(-1);
  cuda::StreamScope scope(stream.has_value(), stream.value_or(0));
  BlobList list = blob_spans(blobs);
  cuda::GpuHashBytesResult r;
  {
    py::gil_scoped_release nogil;
    r = cuda::phash_bytes(list.spans, exact, exif, scope.get(), num_threads);
  }
  const py::ssize_t n = py::ssize_t(r.codes.size());
  std::vector<int8_t> status(r.status.size());
  for (size_t i = 0; i < status.size(); ++i) status[i] = int8_t(r.status[i]);
  py::list errors;
  for (auto& e : r.errors) errors.append(e);
  return py::make_tuple(to_numpy(std::move(r.codes), {n}), to_numpy(std::move(status), {n}), errors);
}

py::dict nvjpeg_load(const std::vector<std::string>& dirs) {
  cuda::NvjpegInfo info = cuda::nvjpeg_load(dirs);
  py::dict d;
  d["compiled"] = info.compiled;
  d["loaded"] = info.loaded;
  d["path"] = info.path;
  d["error"] = info.error;
  d["version"] = info.version;
  d["hardware_backend"] = info.hardware_backend;
  return d;
}

}  // namespace

}  // namespace mmcurate::py_bridge

MMCURATE_BINDING(cuda) {
  namespace py = pybind11;
  using namespace mmcurate::py_bridge;
  using mmcurate::cuda::StreamHandle;

  m.def("cuda_device_count", &mmcurate::cuda::device_count,
        "Visible CUDA devices; 0 for a CPU-only build or when there is no driver or GPU (never raises).");

  py::class_<DeviceArray>(m, "DeviceArray",
                          "An array in CUDA device memory owned by mmcurate. Zero-copy to torch/CuPy through "
                          "__cuda_array_interface__ (v3) or DLPack (torch.from_dlpack); .numpy() copies to host.")
      .def_static(
          "from_host",
          [](py::object array, std::optional<StreamHandle> stream) {
            DeviceScope device(-1);
            mmcurate::cuda::StreamScope scope(stream.has_value(), stream.value_or(0));
            return upload_host(array, "array", scope);
          },
          py::arg("array"), py::arg("stream") = py::none(), "Uploads a host array (copied, packed row-major).")
      .def_static(
          "from_device",
          [](py::object obj, std::optional<StreamHandle> stream) {
            DeviceScope device(device_of(obj));
            mmcurate::cuda::StreamScope scope(stream.has_value(), stream.value_or(0));
            DeviceInput in = to_device_input(obj, "array", scope);
            auto copy = std::make_shared<mmcurate::cuda::DeviceBuffer>(size_t(in.numel()) * in.dtype.itemsize);
            mmcurate::cuda::copy_on_device(copy->data(), in.data, copy->size(), scope.get());
            if (scope.owned()) scope.synchronize();
            return make_device_array(std::move(copy), in.shape, in.dtype, scope);
          },
          py::arg("array"), py::arg("stream") = py::none(),
          "Copies any CUDA array (__cuda_array_interface__ / DLPack) or host array into a new DeviceArray.")
      .def_property_readonly("shape", [](const DeviceArray& a) { return to_tuple(a.shape); })
      .def_property_readonly("dtype", [](const DeviceArray& a) { return py::dtype(a.dtype.typestr()); })
      .def_property_readonly("ndim", [](const DeviceArray& a) { return a.shape.size(); })
      .def_property_readonly("size", &DeviceArray::size)
      .def_property_readonly("nbytes", &DeviceArray::nbytes)
      .def_property_readonly("device", [](const DeviceArray& a) { return a.device; })
      .def_property_readonly("ptr", [](const DeviceArray& a) { return reinterpret_cast<uintptr_t>(a.data()); })
      .def_property_readonly("__cuda_array_interface__", &DeviceArray::cuda_array_interface)
      .def("__dlpack__", &to_dlpack, py::kw_only(), py::arg("stream") = py::none(), py::arg("max_version") = py::none(),
           py::arg("dl_device") = py::none(), py::arg("copy") = py::none())
      .def("__dlpack_device__",
           [](const DeviceArray& a) { return py::make_tuple(int(mmcurate::dlpack::kCUDA), a.device); })
      .def("numpy", &DeviceArray::numpy, "Copies to a new host numpy array (waits for pending work).")
      .def(
          "__array__",
          [](DeviceArray& a, py::object dtype, py::object copy) {
            (void)copy;
            py::array h = a.numpy();
            return dtype.is_none() ? h : py::array(h.attr("astype")(dtype));
          },
          py::arg("dtype") = py::none(), py::arg("copy") = py::none())
      .def("synchronize", &DeviceArray::wait_ready, "Blocks until the work producing this array has finished.")
      .def("__len__",
           [](const DeviceArray& a) {
             if (a.shape.empty()) throw py::type_error("len() of a 0-d DeviceArray");
             return a.shape[0];
           })
      .def("__repr__", [](const DeviceArray& a) {
        std::string s = "DeviceArray(shape=(";
        for (size_t i = 0; i < a.shape.size(); ++i)
          s += std::to_string(a.shape[i]) + (a.shape.size() == 1 || i + 1 < a.shape.size() ? "," : "");
        return s + "), dtype=" + a.dtype.name() + ", device=cuda:" + std::to_string(a.device) + ")";
      });

  m.def("cuda_hamming_pairs", &hamming_pairs, py::arg("codes"), py::arg("max_distance"), py::arg("stream") = py::none(),
        "GPU radius search: pairs (i < j) with Hamming distance <= max_distance, sorted by (i, j). "
        "Returns (pairs int64[m, 2], distances uint8[m]).");
  m.def("cuda_hamming_knn", &hamming_knn, py::arg("codes"), py::arg("k"), py::arg("queries") = py::none(),
        py::arg("stream") = py::none(),
        "GPU exact top-k by Hamming distance, ordered by (distance, index), padded with -1. "
        "queries=None searches the codes themselves, excluding each from its own list.");
  m.def("cuda_resize_images", &resize_images, py::arg("images"), py::arg("size_h"), py::arg("size_w"),
        py::arg("filter"), py::arg("mode"), py::arg("stream") = py::none(),
        "Pillow-exact GPU resize (filter: Pillow id, mode: 0 shortest / 1 squash). images: one (N, H, W[, C]) "
        "array or a list of (H, W[, C]) arrays, host or CUDA. Returns (DeviceArray (n, h, w, c), inputs_were_host).");
  m.def("cuda_hash_images", &hash_images, py::arg("images"), py::arg("kind"), py::arg("stream") = py::none(),
        "imagehash-exact phash/dhash/ahash/whash on the GPU; images as for cuda_resize_images. Returns uint64[n].");
  m.def("cuda_pdq_images", &pdq_images, py::arg("images"), py::arg("dihedral") = false, py::arg("stream") = py::none(),
        "pdqhash-exact PDQ on the GPU; images as for cuda_resize_images. Returns (codes uint8, quality int32).");
  m.def("cuda_image_quality", &image_quality, py::arg("images"), py::arg("stream") = py::none(),
        "Image-quality signals on the GPU; images as for cuda_resize_images. Returns (float32[n, 7], bool[n]).");
  m.def("cuda_phash_bytes", &phash_bytes, py::arg("blobs"), py::arg("exact"), py::arg("exif") = true,
        py::arg("stream") = py::none(), py::arg("num_threads") = 0,
        "GPU decode + pHash of encoded images. Returns (codes uint64[n], status int8[n], errors).");
  m.def("cuda_nvjpeg_load", &nvjpeg_load, py::arg("search_dirs"),
        "Opens libnvjpeg (dlopen) from the first of search_dirs that has it, else the default loader path.");
  m.def("cuda_decode_images", &decode_images, py::arg("blobs"), py::arg("mode"), py::arg("min_width"),
        py::arg("min_height"), py::arg("max_pixels"), py::arg("exif"), py::arg("fast_dct") = false,
        py::arg("stream") = py::none(), py::arg("num_threads") = 0,
        "Batched decode to device memory (nvJPEG, CPU fallback per sample). Returns (images, status int8, "
        "errors, formats int8, source_sizes int32[n, 2] (h, w), orientation int8, decoded_on_gpu bool).");
}
