// Fashion-MNIST (apt dataset-fashion-mnist) read from its IDX .gz files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace eqsim {

inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";
inline constexpr int kFashionMnistClasses = 10;
inline constexpr int kFashionMnistSide = 28;

// English names for the ten classes, singular and plural ("ankle boot", "ankle boots").
const std::vector<std::string>& FashionMnistClassNames();
const std::vector<std::string>& FashionMnistClassPlurals();

struct FashionMnist {
  int64_t count = 0;
  std::vector<uint8_t> pixels;  // count * 28 * 28, row-major, 0 = background
  std::vector<uint8_t> labels;  // count, 0..9
  const uint8_t* image(int64_t i) const { return pixels.data() + i * 28 * 28; }
};

enum class FashionMnistSplit { kTrain, kTest };

// Reads `<dir>/train-*` (60k) or `<dir>/t10k-*` (10k). Errors name the file and what is wrong
// (missing, bad magic, truncated, label/image count mismatch).
absl::StatusOr<FashionMnist> LoadFashionMnist(FashionMnistSplit split,
                                              const std::string& dir = kFashionMnistDir);

}  // namespace eqsim
