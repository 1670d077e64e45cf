// dlopen of libnvjpeg and resolution of the few entry points the decoder uses.
#include "cuda/nvjpeg_loader.h"

#include <dlfcn.h>

#include <mutex>
#include <string>

namespace mmcurate::cuda {
namespace {

std::mutex g_mutex;
NvjpegInfo g_info;
bool g_attempted = false;

#ifdef MMCURATE_WITH_NVJPEG
NvjpegApi g_api;
bool g_api_ready = false;

// The wheel ships libnvjpeg.so.<major>; the toolkit also has the unversioned development link.
const char* const kLibraryNames[] = {"libnvjpeg.so.13", "libnvjpeg.so.12", "libnvjpeg.so"};

template <typename Fn>
bool resolve(void* lib, const char* name, Fn* slot, std::string* missing) {
  *slot = reinterpret_cast<Fn>(dlsym(lib, name));
  if (!*slot) *missing += std::string(missing->empty() ? "" : ", ") + name;
  return *slot != nullptr;
}

bool fill_table(void* lib, std::string* missing) {
  bool ok = true;
  ok &= resolve(lib, "nvjpegGetProperty", &g_api.GetProperty, missing);
  ok &= resolve(lib, "nvjpegCreateEx", &g_api.CreateEx, missing);
  ok &= resolve(lib, "nvjpegDestroy", &g_api.Destroy, missing);
  ok &= resolve(lib, "nvjpegJpegStateCreate", &g_api.JpegStateCreate, missing);
  ok &= resolve(lib, "nvjpegJpegStateDestroy", &g_api.JpegStateDestroy, missing);
  ok &= resolve(lib, "nvjpegGetImageInfo", &g_api.GetImageInfo, missing);
  ok &= resolve(lib, "nvjpegDecode", &g_api.Decode, missing);
  ok &= resolve(lib, "nvjpegDecodeBatchedInitialize", &g_api.DecodeBatchedInitialize, missing);
  ok &= resolve(lib, "nvjpegDecodeBatched", &g_api.DecodeBatched, missing);
  ok &= resolve(lib, "nvjpegJpegStreamCreate", &g_api.JpegStreamCreate, missing);
  ok &= resolve(lib, "nvjpegJpegStreamDestroy", &g_api.JpegStreamDestroy, missing);
  ok &= resolve(lib, "nvjpegJpegStreamParse", &g_api.JpegStreamParse, missing);
  ok &= resolve(lib, "nvjpegDecodeBatchedSupported", &g_api.DecodeBatchedSupported, missing);
  return ok;
}

void load_locked(const std::vector<std::string>& search_dirs) {
  g_attempted = true;
  g_info = NvjpegInfo{};
  g_info.compiled = true;
  std::vector<std::string> candidates;
  for (const auto& dir : search_dirs)
    for (const char* name : kLibraryNames) candidates.push_back(dir + "/" + name);
  for (const char* name : kLibraryNames) candidates.push_back(name);  // default loader path
  std::string tried;
  for (const auto& path : candidates) {
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* err = dlerror();
      tried += "\n  " + path + ": " + (err ? err : "not found");
      continue;
    }
    std::string missing;
    if (!fill_table(lib, &missing)) {
      tried += "\n  " + path + ": missing symbols " + missing;
      dlclose(lib);
      continue;
    }
    int major = 0, minor = 0, patch = 0;
    g_api.GetProperty(MAJOR_VERSION, &major);
    g_api.GetProperty(MINOR_VERSION, &minor);
    g_api.GetProperty(PATCH_LEVEL, &patch);
    g_info.loaded = true;
    g_info.path = path;
    g_info.version = major * 1000 + minor * 10 + patch;
    g_api_ready = true;  // the library stays open for the life of the process
    return;
  }
  g_info.error = "libnvjpeg not found (pip install nvidia-nvjpeg); tried:" + tried;
}
#endif

}  // namespace

NvjpegInfo nvjpeg_load(const std::vector<std::string>& search_dirs) {
  std::lock_guard<std::mutex> lock(g_mutex);
#ifdef MMCURATE_WITH_NVJPEG
  if (!g_api_ready) load_locked(search_dirs);
#else
  (void)search_dirs;
  g_attempted = true;
  g_info.error = "mmcurate was built without nvjpeg.h (pip install nvidia-nvjpeg before building)";
#endif
  return g_info;
}

NvjpegInfo nvjpeg_info() {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_attempted) return g_info;
  }
  return nvjpeg_load({});
}

void set_nvjpeg_hardware_backend(bool available);  // decode_cuda.cu reports what the handle could use

void set_nvjpeg_hardware_backend(bool available) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_info.hardware_backend = available;
}

#ifdef MMCURATE_WITH_NVJPEG
const NvjpegApi* nvjpeg_api() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_api_ready ? &g_api : nullptr;
}

const char* nvjpeg_status_name(nvjpegStatus_t s) {
  switch (s) {
    case NVJPEG_STATUS_SUCCESS: return "NVJPEG_STATUS_SUCCESS";
    case NVJPEG_STATUS_NOT_INITIALIZED: return "NVJPEG_STATUS_NOT_INITIALIZED";
    case NVJPEG_STATUS_INVALID_PARAMETER: return "NVJPEG_STATUS_INVALID_PARAMETER";
    case NVJPEG_STATUS_BAD_JPEG: return "NVJPEG_STATUS_BAD_JPEG";
    case NVJPEG_STATUS_JPEG_NOT_SUPPORTED: return "NVJPEG_STATUS_JPEG_NOT_SUPPORTED";
    case NVJPEG_STATUS_ALLOCATOR_FAILURE: return "NVJPEG_STATUS_ALLOCATOR_FAILURE";
    case NVJPEG_STATUS_EXECUTION_FAILED: return "NVJPEG_STATUS_EXECUTION_FAILED";
    case NVJPEG_STATUS_ARCH_MISMATCH: return "NVJPEG_STATUS_ARCH_MISMATCH";
    case NVJPEG_STATUS_INTERNAL_ERROR: return "NVJPEG_STATUS_INTERNAL_ERROR";
    case NVJPEG_STATUS_IMPLEMENTATION_NOT_SUPPORTED: return "NVJPEG_STATUS_IMPLEMENTATION_NOT_SUPPORTED";
    case NVJPEG_STATUS_INCOMPLETE_BITSTREAM: return "NVJPEG_STATUS_INCOMPLETE_BITSTREAM";
  }
  return "NVJPEG_STATUS_UNKNOWN";
}
#endif

}  // namespace mmcurate::cuda
