// MMCURATE_HD marks header-only math shared by the CPU kernels and their CUDA twins.
// Under nvcc it expands to __host__ __device__; for the host compiler it is empty.
// Headers in csrc/kernels/ use no std:: containers and no exceptions, so nvcc can compile them
// for the device; they operate on raw pointers with sizes passed explicitly.
#pragma once

#if defined(__CUDACC__)
#define MMCURATE_HD __host__ __device__
#else
#define MMCURATE_HD
#endif
