#include "model/core/command_line.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eqsim {
namespace {

using ::testing::ElementsAre;

TEST(NormalizeFlagNames, DashesInNamesOnlyUpToABareDoubleDash) {
  EXPECT_THAT(NormalizeFlagNames({"prog", "--model-repository=a-b/c-d", "--twin-prob", "0.5",
                                  "-v", "pos-arg", "--max_batch_size=8", "--", "--keep-me"}),
              ElementsAre("prog", "--model_repository=a-b/c-d", "--twin_prob", "0.5", "-v",
                          "pos-arg", "--max_batch_size=8", "--", "--keep-me"));
  EXPECT_THAT(NormalizeFlagNames({"my-prog", "--", "--a-b"}), ElementsAre("my-prog", "--", "--a-b"));
  EXPECT_THAT(NormalizeFlagNames({"p", "--x-y=", "--"}), ElementsAre("p", "--x_y=", "--"));
}

}  // namespace
}  // namespace eqsim
