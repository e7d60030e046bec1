// Plain, torch-free containers that cross the model/ boundary.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace eqsim {

// A dense row-major float matrix, e.g. [n, dim] embeddings.
struct Matrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> data;  // rows * cols

  Matrix() = default;
  Matrix(int64_t r, int64_t c) : rows(r), cols(c), data(static_cast<size_t>(r * c), 0.f) {}
  float* row(int64_t i) { return data.data() + i * cols; }
  const float* row(int64_t i) const { return data.data() + i * cols; }
  float& at(int64_t i, int64_t j) { return data[static_cast<size_t>(i * cols + j)]; }
  float at(int64_t i, int64_t j) const { return data[static_cast<size_t>(i * cols + j)]; }
};

// One preprocessed image: float32 [3, height, width], channel-major (CHW), RGB.
struct ImageTensor {
  int height = 0;
  int width = 0;
  std::vector<float> data;  // 3 * height * width
};

// A batch of preprocessed images: float32 [n, 3, height, width], contiguous.
struct ImageBatch {
  int64_t n = 0;
  int height = 0;
  int width = 0;
  std::vector<float> data;
};

// A batch of token ids: int64 [n, length], zero padded.
struct TokenBatch {
  int64_t n = 0;
  int length = 0;
  std::vector<int64_t> ids;
};

// L2-normalises every row in place (rows of norm 0 are left as they are).
void L2NormalizeRows(Matrix& m);

// Packs equally sized images into one batch; all must have the same height and width.
ImageBatch StackImages(const std::vector<const ImageTensor*>& images);

}  // namespace eqsim
