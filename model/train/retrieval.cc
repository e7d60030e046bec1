#include <cmath>
#include <vector>

#include "model/train/trainer.h"

namespace eqsim {

RetrievalMetrics ComputeRetrieval(const Matrix& image_emb, const Matrix& text_emb) {
  RetrievalMetrics m;
  const int64_t n = std::min(image_emb.rows, text_emb.rows);
  m.n = static_cast<int>(n);
  if (n == 0 || image_emb.cols != text_emb.cols) return m;
  Matrix a = image_emb, b = text_emb;
  L2NormalizeRows(a);
  L2NormalizeRows(b);
  std::vector<double> s(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double d = 0;
      for (int64_t k = 0; k < a.cols; ++k) d += double{a.at(i, k)} * b.at(j, k);
      s[static_cast<size_t>(i * n + j)] = d;
    }
  }
  auto at = [&](int64_t i, int64_t j) { return s[static_cast<size_t>(i * n + j)]; };
  int i2t1 = 0, i2t5 = 0, t2i1 = 0;
  for (int64_t i = 0; i < n; ++i) {
    // Rank of the right caption for image i: how many captions score >= it (ties hurt).
    int better = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (j != i && !(at(i, j) < at(i, i))) ++better;
    }
    i2t1 += better == 0;
    i2t5 += better < 5;
    int better_t = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (j != i && !(at(j, i) < at(i, i))) ++better_t;
    }
    t2i1 += better_t == 0;
  }
  m.i2t_r1 = static_cast<double>(i2t1) / n;
  m.i2t_r5 = static_cast<double>(i2t5) / n;
  m.t2i_r1 = static_cast<double>(t2i1) / n;
  return m;
}

}  // namespace eqsim
