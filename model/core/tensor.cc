#include "model/core/tensor.h"

#include <cmath>
#include <cstring>

namespace eqsim {

void L2NormalizeRows(Matrix& m) {
  for (int64_t i = 0; i < m.rows; ++i) {
    float* r = m.row(i);
    double ss = 0;
    for (int64_t j = 0; j < m.cols; ++j) ss += static_cast<double>(r[j]) * r[j];
    if (ss <= 0) continue;
    const float inv = static_cast<float>(1.0 / std::sqrt(ss));
    for (int64_t j = 0; j < m.cols; ++j) r[j] *= inv;
  }
}

ImageBatch StackImages(const std::vector<const ImageTensor*>& images) {
  ImageBatch b;
  b.n = static_cast<int64_t>(images.size());
  if (images.empty()) return b;
  b.height = images[0]->height;
  b.width = images[0]->width;
  const size_t per = static_cast<size_t>(3) * b.height * b.width;
  b.data.resize(per * images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    std::memcpy(b.data.data() + i * per, images[i]->data.data(), per * sizeof(float));
  }
  return b;
}

}  // namespace eqsim
