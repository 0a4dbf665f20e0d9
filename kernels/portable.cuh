// Portability layer: lets the same kernel source compile with NVRTC/nvcc for
// an NVIDIA GPU and with a host C++ compiler for the CPU backend.
//
// On the host, CUDA's launch coordinates (threadIdx, blockIdx, blockDim,
// gridDim) become thread-local loop variables set by the CPU launcher
// (metaclip_gpu/engine/_native/cpu_launch.cpp), and atomics become compiler atomics.
// Kernels must not use block-level cooperation (__shared__, __syncthreads):
// the host layer does not provide it.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
// ---------------------------------------------------------------- device ---
#define MC_ON_DEVICE 1
typedef unsigned char mc_u8;
typedef int mc_i32;
typedef unsigned int mc_u32;
typedef long long mc_i64;
typedef unsigned long long mc_u64;
#define MC_FN __device__ __forceinline__
#define MC_METHOD __device__ __forceinline__
#define MC_OUTLINED_FN __device__ __forceinline__
#define MC_KERNEL extern "C" __global__
#define MC_RESTRICT __restrict__

#else
// ------------------------------------------------------------------ host ---
#define MC_ON_DEVICE 0
#include <cstdint>
#include <cstring>
typedef uint8_t mc_u8;
typedef int32_t mc_i32;
typedef uint32_t mc_u32;
typedef int64_t mc_i64;
typedef uint64_t mc_u64;
#define MC_FN static inline
#define MC_METHOD inline
// A function the host compiler keeps out of line, so that inlining it does not
// change how the code around its call is compiled (the GPU inlines it all).
#define MC_OUTLINED_FN static __attribute__((noinline))
#define MC_KERNEL static inline
#define MC_RESTRICT __restrict__

struct mc_dim3 {
  unsigned int x, y, z;
};
// Set by the CPU launcher before each emulated thread runs.
static thread_local mc_dim3 threadIdx, blockIdx, blockDim, gridDim;

template <typename T>
static inline T atomicAdd(T* address, T value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}
#endif

// log2 of a power of two (no popcount instruction needed on the host).
MC_FN int mc_log2_pow2(mc_u64 x) {
#if MC_ON_DEVICE
  return __ffsll((long long)x) - 1;
#else
  return __builtin_ctzll(x);
#endif
}

// A hint to start loading the cache line at p. The CPU build issues a
// prefetch so one text's table probes overlap instead of waiting one by one;
// on the GPU, thousands of resident threads already hide that latency.
MC_FN void mc_prefetch(const void* p) {
#if MC_ON_DEVICE
  (void)p;
#else
  __builtin_prefetch(p, 0, 1);
#endif
}

// Byte equality of a[0..n) and b[0..n). When both sides may be read 8 bytes
// past a (the verification blob carries 8 bytes of tail padding; the caller
// says b_readable), the host compares one masked 64-bit word; from 9 to 16
// bytes it compares the first 8 and the last 8 (two words that overlap, inside
// both ranges); longer, the C library's memcmp. The device compares bytes.
MC_FN int mc_bytes_equal(const mc_u8* a, const mc_u8* b, mc_i64 n, mc_i64 b_readable) {
#if MC_ON_DEVICE
  (void)b_readable;
  for (mc_i64 i = 0; i < n; ++i)
    if (a[i] != b[i]) return 0;
  return 1;
#else
  if (n <= 8 && b_readable >= 8) {
    mc_u64 x, y;
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    // Little-endian: byte i is bits 8i..8i+7; shift out the bytes past n.
    return n == 0 || ((x ^ y) << (64 - 8 * n)) == 0;
  }
  if (n > 8 && n <= 16) {  // two words that overlap: the first 8 bytes and the last 8
    mc_u64 x0, y0, x1, y1;
    memcpy(&x0, a, 8);
    memcpy(&y0, b, 8);
    memcpy(&x1, a + n - 8, 8);
    memcpy(&y1, b + n - 8, 8);
    return ((x0 ^ y0) | (x1 ^ y1)) == 0;
  }
  return memcmp(a, b, (size_t)n) == 0;
#endif
}

// Grid-stride helpers shared by every kernel.
MC_FN mc_i64 mc_global_thread() {
  return (mc_i64)blockIdx.x * (mc_i64)blockDim.x + (mc_i64)threadIdx.x;
}
MC_FN mc_i64 mc_global_stride() {
  return (mc_i64)gridDim.x * (mc_i64)blockDim.x;
}
