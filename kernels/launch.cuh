// Every kernel launch is written LRLAB_LAUNCH(grid, block, stream, kernel)(args...), and every
// shared-memory variable LRLAB_SHARED(type, name), so that the device emulator
// (tests/device_emulator), which builds these files as C++ for the GPU tests on machines without a
// GPU, can run them: it gives each block shared memory of its own, filled with NaNs. Dynamic shared
// memory is never used.
#pragma once

namespace lrlab {
template <typename T>
using SharedVar = T;  // lets LRLAB_SHARED take array types: LRLAB_SHARED(float[8][33], part)
}  // namespace lrlab

#if defined(LRLAB_DEVICE_EMULATOR)
#define LRLAB_LAUNCH(grid, block, stream, ...) ::lrlab_emu::launch(grid, block, stream, &__VA_ARGS__)
#define LRLAB_SHARED(type, name)         \
  static const char name##_lrlab_key = 0; \
  ::lrlab::SharedVar<type>& name = ::lrlab_emu::shared_memory<::lrlab::SharedVar<type>>(&name##_lrlab_key)
#else
#define LRLAB_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<grid, block, 0, stream>>>
#define LRLAB_SHARED(type, name) __shared__ ::lrlab::SharedVar<type> name
#endif
