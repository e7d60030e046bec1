#include "model/core/tensor.h"

#include <cmath>

#include "gtest/gtest.h"

namespace eqsim {
namespace {

TEST(TensorTest, L2NormalizeRowsMakesUnitRowsAndKeepsZeroRows) {
  Matrix m(2, 2);
  m.at(0, 0) = 3;
  m.at(0, 1) = 4;
  L2NormalizeRows(m);
  EXPECT_FLOAT_EQ(m.at(0, 0), 0.6f);
  EXPECT_FLOAT_EQ(m.at(0, 1), 0.8f);
  EXPECT_EQ(m.at(1, 0), 0.f);
  EXPECT_EQ(m.at(1, 1), 0.f);
}

TEST(TensorTest, StackImagesConcatenatesInOrder) {
  ImageTensor a{1, 1, {1, 2, 3}}, b{1, 1, {4, 5, 6}};
  ImageBatch batch = StackImages({&a, &b});
  EXPECT_EQ(batch.n, 2);
  EXPECT_EQ(batch.data, (std::vector<float>{1, 2, 3, 4, 5, 6}));
}

}  // namespace
}  // namespace eqsim
