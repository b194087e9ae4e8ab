// Device helpers shared by the CUDA kernels: element conversions and the register-row dot product.
// Light on purpose (CUDA headers only), like every file under csrc/cuda.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace letter_fast {
namespace cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// r . row for a row in registers (kDim floats, kDim % 4 == 0) and a 16-byte aligned row in shared
// memory, read as float4: plain FMAs in float32, no TF32.
template <int kDim>
__device__ __forceinline__ float dot(const float (&r)[kDim], const float* row) {
  const float4* v4 = reinterpret_cast<const float4*>(row);
  float acc = 0.0f;
#pragma unroll
  for (int k4 = 0; k4 < kDim / 4; ++k4) {
    const float4 v = v4[k4];
    acc = fmaf(r[4 * k4 + 0], v.x, acc);
    acc = fmaf(r[4 * k4 + 1], v.y, acc);
    acc = fmaf(r[4 * k4 + 2], v.z, acc);
    acc = fmaf(r[4 * k4 + 3], v.w, acc);
  }
  return acc;
}

}  // namespace cuda
}  // namespace letter_fast
