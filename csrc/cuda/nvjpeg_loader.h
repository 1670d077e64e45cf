// libnvjpeg opened at run time (dlopen), so the module imports and runs without it: the function table
// below is filled from the first library found, and decode falls back to the CPU when it is absent.
#pragma once
#ifdef MMCURATE_WITH_NVJPEG
#include <nvjpeg.h>
#endif

#include <string>
#include <vector>

#include "mmcurate/cuda_api.h"

namespace mmcurate::cuda {

#ifdef MMCURATE_WITH_NVJPEG
struct NvjpegApi {
  decltype(&::nvjpegGetProperty) GetProperty = nullptr;
  decltype(&::nvjpegCreateEx) CreateEx = nullptr;
  decltype(&::nvjpegDestroy) Destroy = nullptr;
  decltype(&::nvjpegJpegStateCreate) JpegStateCreate = nullptr;
  decltype(&::nvjpegJpegStateDestroy) JpegStateDestroy = nullptr;
  decltype(&::nvjpegGetImageInfo) GetImageInfo = nullptr;
  decltype(&::nvjpegDecode) Decode = nullptr;
  decltype(&::nvjpegDecodeBatchedInitialize) DecodeBatchedInitialize = nullptr;
  decltype(&::nvjpegDecodeBatched) DecodeBatched = nullptr;
  decltype(&::nvjpegJpegStreamCreate) JpegStreamCreate = nullptr;
  decltype(&::nvjpegJpegStreamDestroy) JpegStreamDestroy = nullptr;
  decltype(&::nvjpegJpegStreamParse) JpegStreamParse = nullptr;
  decltype(&::nvjpegDecodeBatchedSupported) DecodeBatchedSupported = nullptr;
};

// The table once nvjpeg_load() has succeeded, else nullptr. Thread-safe after loading.
const NvjpegApi* nvjpeg_api();

const char* nvjpeg_status_name(nvjpegStatus_t s);
#endif

// The state of the last nvjpeg_load() (or a load from the default loader path if none was attempted).
NvjpegInfo nvjpeg_info();

}  // namespace mmcurate::cuda
