// Trie-masked beam step on the GPU (math and candidate order: csrc/cpu/trie_kernel.h).
//
// One block per query. Every candidate slot (beam b, child slot j < N) of the query gets one int64
// key, held in shared memory (global scratch when B * N does not fit):
//     key = ordered(score) << 32 | (2^32 - 1 - (b * N + j)),   INT64_MIN when not a candidate,
// where ordered() maps float32 bits to int32 monotonically (-0.0 as +0.0). Keys are distinct and
// a larger key ranks first, exactly as the reference's stable sort. The k winners are then
// extracted in k rounds: each thread keeps the maximum of its own keys below the last winner, a
// block-wide max picks the next winner, and only the thread that owned it rescans its keys.
// Work per query: O(B * N + k * (B * N / threads + log threads)); nothing depends on V.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "device_math.cuh"
#include "launch.h"

namespace letter_fast {
namespace cuda {
namespace {

constexpr int kStepThreads = 256;
constexpr int64_t kSharedKeys = 5632;  // 44 KiB of keys: B * N up to this stays in shared memory
constexpr long long kNoKey = static_cast<long long>(-9223372036854775807LL - 1);


__device__ __forceinline__ long long make_key(float s, int64_t flat) {
  int bits = __float_as_int(s);
  if (bits == static_cast<int>(0x80000000u)) bits = 0;  // -0.0 ranks as +0.0
  const int ordered = bits < 0 ? (bits ^ 0x7FFFFFFF) : bits;
  return (static_cast<long long>(ordered) << 32) | static_cast<long long>(0xFFFFFFFFLL - flat);
}

__device__ __forceinline__ long long warp_max(long long v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_down_sync(0xFFFFFFFFu, v, offset));
  return v;
}

// Block-wide maximum, returned to every thread; `red` holds kStepThreads / 32 + 1 entries.
__device__ __forceinline__ long long block_max(long long v, long long* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kStepThreads / 32 ? red[lane] : kNoKey;
    v = warp_max(v);
    if (lane == 0) red[kStepThreads / 32] = v;
  }
  __syncthreads();
  const long long out = red[kStepThreads / 32];
  __syncthreads();  // everyone has read before red is written again
  return out;
}

template <typename LP, typename Code>
__global__ void __launch_bounds__(kStepThreads)
    trie_step_kernel(const int64_t* __restrict__ node, const LP* __restrict__ lp, int64_t s0, int64_t s1,
                     const float* __restrict__ scores, const int32_t* __restrict__ child_ptr,
                     const Code* __restrict__ child_code, int64_t B, int64_t N, int64_t k,
                     int64_t* __restrict__ out_parent, int64_t* __restrict__ out_code,
                     int64_t* __restrict__ out_child, float* __restrict__ out_score, long long* scratch) {
  __shared__ long long shared_keys[kSharedKeys];
  __shared__ long long red[kStepThreads / 32 + 1];
  const int64_t q = blockIdx.x;
  const int64_t C = B * N;
  long long* keys = C <= kSharedKeys ? shared_keys : scratch + q * C;

  long long mine = kNoKey;  // best key among this thread's slots not yet taken
  for (int64_t c = threadIdx.x; c < C; c += kStepThreads) {
    const int64_t b = c / N, slot = c - b * N, r = q * B + b;
    const int64_t n = node[r];
    long long key = kNoKey;
    if (n >= 0) {
      const int64_t lo = child_ptr[n], count = child_ptr[n + 1] - lo;
      if (slot < count) {
        const int64_t code = static_cast<int64_t>(child_code[lo + slot]);
        const float s = scores[r] + to_float(lp[r * s0 + code * s1]);
        if (s > -INFINITY) key = make_key(s, c);
      }
    }
    keys[c] = key;
    mine = max(mine, key);
  }
  __syncthreads();

  for (int64_t i = 0; i < k; ++i) {
    const long long best = block_max(mine, red);
    if (best == kNoKey) {  // uniform across the block: fewer than k candidates
      for (int64_t p = i + threadIdx.x; p < k; p += kStepThreads) {
        out_parent[q * k + p] = out_code[q * k + p] = out_child[q * k + p] = -1;
        out_score[q * k + p] = -INFINITY;
      }
      return;
    }
    if (threadIdx.x == 0) {
      const int64_t flat = 0xFFFFFFFFLL - (best & 0xFFFFFFFFLL);
      const int64_t b = flat / N, slot = flat - b * N, r = q * B + b;
      const int64_t child = static_cast<int64_t>(child_ptr[node[r]]) + slot;
      const int64_t code = static_cast<int64_t>(child_code[child]);
      out_parent[q * k + i] = r;
      out_code[q * k + i] = code;
      out_child[q * k + i] = child;
      out_score[q * k + i] = scores[r] + to_float(lp[r * s0 + code * s1]);
    }
    if (mine == best) {  // keys are distinct: exactly one thread owned the winner
      long long next = kNoKey;
      for (int64_t c = threadIdx.x; c < C; c += kStepThreads) {
        const long long key = keys[c];
        if (key < best) next = max(next, key);
      }
      mine = next;
    }
  }
}

template <typename LP>
cudaError_t launch(const int64_t* node, const void* lp, int64_t s0, int64_t s1, const float* scores,
                   const int32_t* child_ptr, const void* child_code, bool code_is_int32, int64_t Q, int64_t B,
                   int64_t N, int64_t k, int64_t* out_parent, int64_t* out_code, int64_t* out_child,
                   float* out_score, int64_t* scratch, cudaStream_t stream) {
  const auto* typed = static_cast<const LP*>(lp);
  auto* keys = reinterpret_cast<long long*>(scratch);
  if (code_is_int32) {
    trie_step_kernel<LP, int32_t><<<static_cast<unsigned>(Q), kStepThreads, 0, stream>>>(
        node, typed, s0, s1, scores, child_ptr, static_cast<const int32_t*>(child_code), B, N, k, out_parent,
        out_code, out_child, out_score, keys);
  } else {
    trie_step_kernel<LP, int16_t><<<static_cast<unsigned>(Q), kStepThreads, 0, stream>>>(
        node, typed, s0, s1, scores, child_ptr, static_cast<const int16_t*>(child_code), B, N, k, out_parent,
        out_code, out_child, out_score, keys);
  }
  return cudaGetLastError();
}

}  // namespace

int64_t trie_step_scratch_elems(int64_t Q, int64_t B, int64_t N) { return B * N <= kSharedKeys ? 0 : Q * B * N; }

cudaError_t trie_step(ElementType type, const int64_t* node, const void* log_probs, int64_t stride_row,
                      int64_t stride_col, const float* scores, const int32_t* child_ptr, const void* child_code,
                      bool code_is_int32, int64_t Q, int64_t B, int64_t N, int64_t k, int64_t* out_parent,
                      int64_t* out_code, int64_t* out_child, float* out_score, int64_t* scratch,
                      cudaStream_t stream) {
  if (Q == 0) return cudaSuccess;
  switch (type) {
    case ElementType::kFloat32:
      return launch<float>(node, log_probs, stride_row, stride_col, scores, child_ptr, child_code, code_is_int32, Q,
                           B, N, k, out_parent, out_code, out_child, out_score, scratch, stream);
    case ElementType::kFloat16:
      return launch<__half>(node, log_probs, stride_row, stride_col, scores, child_ptr, child_code, code_is_int32,
                            Q, B, N, k, out_parent, out_code, out_child, out_score, scratch, stream);
    case ElementType::kBFloat16:
      return launch<__nv_bfloat16>(node, log_probs, stride_row, stride_col, scores, child_ptr, child_code,
                                   code_is_int32, Q, B, N, k, out_parent, out_code, out_child, out_score, scratch,
                                   stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace letter_fast
