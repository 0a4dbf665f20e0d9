// Test-only harness of the emulated device (tests/gpu_emulation): it is compiled together with
// the kernel source that cupy.RawModule was given (host branch of kernels/portable.cuh) into a
// shared library that exposes every kernel by name with
//   - its parameter list as the C++ compiler sees it (pointer or value, kind, width, const),
//   - a launcher that runs every (blockIdx, threadIdx) of a launch's grid and block, one after
//     the other, reading each argument from a void* array the way cuLaunchKernel does.
// The generated translation unit includes the kernel source, then this header, then lists the
// kernels with EMU_KERNEL(name) inside EMU_KERNEL_TABLE.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace emu {

struct Param {  // one kernel parameter as the launch ABI sees it
  int32_t is_pointer;
  int32_t kind;  // 'i' signed integer, 'u' unsigned integer, 'f' floating point, 'b' bool
  int32_t size;  // bytes of the value; for a pointer, of one pointed-to element
  int32_t is_const;  // pointers: whether the pointee is const
};

template <typename T>
constexpr int32_t kind_of() {
  if (std::is_same<T, bool>::value) return 'b';
  if (std::is_floating_point<T>::value) return 'f';
  return std::is_signed<T>::value ? 'i' : 'u';
}

template <typename T>
Param describe_one() {
  if constexpr (std::is_pointer<T>::value) {
    using Pointee = std::remove_pointer_t<T>;
    using Value = std::remove_cv_t<Pointee>;
    static_assert(std::is_arithmetic<Value>::value, "kernel pointer to a non-arithmetic type");
    return {1, kind_of<Value>(), (int32_t)sizeof(Value), (int32_t)std::is_const<Pointee>::value};
  } else {
    static_assert(std::is_arithmetic<T>::value, "kernel parameter of a non-arithmetic type");
    return {0, kind_of<T>(), (int32_t)sizeof(T), 0};
  }
}

template <typename... A>
struct Signature {
  static constexpr int count = (int)sizeof...(A);
  static void describe(Param* out) {
    const Param params[] = {describe_one<A>()..., Param{}};
    for (int i = 0; i < count; ++i) out[i] = params[i];
  }
  template <void (*F)(A...), std::size_t... I>
  static void call_with(void** args, std::index_sequence<I...>) {
    F(*static_cast<std::remove_reference_t<A>*>(args[I])...);
  }
  template <void (*F)(A...)>
  static void call(void** args) {
    call_with<F>(args, std::index_sequence_for<A...>{});
  }
};

template <typename... A>
Signature<A...> signature_of(void (*)(A...));

struct Kernel {
  const char* name;
  int n_params;
  void (*describe)(Param*);
  void (*call)(void**);
};

}  // namespace emu

#define EMU_KERNEL(NAME)                                          \
  emu::Kernel {                                                   \
    #NAME, decltype(emu::signature_of(&NAME))::count,             \
        &decltype(emu::signature_of(&NAME))::describe,            \
        &decltype(emu::signature_of(&NAME))::template call<&NAME> \
  }

#define EMU_KERNEL_TABLE(...)                                                                  \
  static const emu::Kernel emu_kernels[] = {__VA_ARGS__};                                      \
  extern "C" {                                                                                 \
  int emu_kernel_count(void) { return (int)(sizeof(emu_kernels) / sizeof(emu_kernels[0])); }   \
  const char* emu_kernel_name(int k) { return emu_kernels[k].name; }                           \
  int emu_kernel_params(int k, emu::Param* out, int capacity) {                                \
    if (emu_kernels[k].n_params <= capacity) emu_kernels[k].describe(out);                     \
    return emu_kernels[k].n_params;                                                            \
  }                                                                                            \
  /* Every block of the grid, every thread of the block, in order (x fastest). */              \
  void emu_launch(int k, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,      \
                  unsigned bz, void** args) {                                                  \
    gridDim = {gx, gy, gz};                                                                    \
    blockDim = {bx, by, bz};                                                                   \
    for (unsigned z = 0; z < gz; ++z)                                                          \
      for (unsigned y = 0; y < gy; ++y)                                                        \
        for (unsigned x = 0; x < gx; ++x) {                                                    \
          blockIdx = {x, y, z};                                                                \
          for (unsigned tz = 0; tz < bz; ++tz)                                                 \
            for (unsigned ty = 0; ty < by; ++ty)                                               \
              for (unsigned tx = 0; tx < bx; ++tx) {                                           \
                threadIdx = {tx, ty, tz};                                                      \
                emu_kernels[k].call(args);                                                     \
              }                                                                                \
        }                                                                                      \
  }                                                                                            \
  }
