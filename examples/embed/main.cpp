// Embedding lrlab in a trainer: fit y = 3x - 1 by SGD on a flat parameter buffer, with AdamW, a
// warmup + cosine schedule, a manual lowering half way and a save/restore of the optimizer state.
// Host buffers, so the CPU optimizer; with device buffers the same code takes lrlab::Device::CUDA.
// Exits non-zero if the fit fails.
#include <lrlab/device.hpp>
#include <lrlab/error.hpp>
#include <lrlab/optimizer.hpp>
#include <lrlab/schedule.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  try {
    const int steps = 400;
    std::vector<float> params = {0.0f, 0.0f};  // w, b
    std::vector<float> grads(2);
    lrlab::OptimizerSetup setup;
    setup.lr = 0.1f;
    lrlab::Optimizer opt("adamw(wd=0)", lrlab::Device::CPU, 2, setup);
    auto schedule = lrlab::Schedule::parse("warmup(steps=20) + cosine(steps=380, min=0.01)");
    opt.set_schedule(schedule.table(steps, 0.1));
    for (int t = 0; t < steps; ++t) {
      // Gradient of the mean squared error over x in {-1, -0.5, 0, 0.5, 1}.
      grads = {0.0f, 0.0f};
      for (float x : {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f}) {
        float err = params[0] * x + params[1] - (3.0f * x - 1.0f);
        grads[0] += 2.0f * err * x / 5.0f;
        grads[1] += 2.0f * err / 5.0f;
      }
      opt.step(params, grads);
      if (t == steps / 2) {
        std::string saved = opt.save();  // what a checkpoint would hold
        opt.load(saved);
        opt.set_lr(0.05f);               // manual lowering
      }
    }
    std::printf("w=%.4f b=%.4f after %lld steps (cuda available: %s)\n", params[0], params[1],
                static_cast<long long>(opt.step_count()), lrlab::cuda_available() ? "yes" : "no");
    bool ok = std::abs(params[0] - 3.0f) < 0.05f && std::abs(params[1] + 1.0f) < 0.05f;
    return ok ? 0 : 1;
  } catch (const lrlab::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
