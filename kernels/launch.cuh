// Every kernel launch is written LRLAB_LAUNCH(grid, block, stream, kernel)(args...), so that the
// device emulator (tests/device_emulator), which builds these files as C++ for the GPU tests on
// machines without a GPU, can run it. Dynamic shared memory is never used.
#pragma once

#if defined(LRLAB_DEVICE_EMULATOR)
#define LRLAB_LAUNCH(grid, block, stream, ...) ::lrlab_emu::launch(grid, block, stream, &__VA_ARGS__)
#else
#define LRLAB_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<grid, block, 0, stream>>>
#endif
