#include "model/bench/metrics.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace eqsim {
namespace {

// Score tables are written as {s(c0,i0), s(c0,i1), s(c1,i0), s(c1,i1)}.
PairCorrect Score(float c0i0, float c0i1, float c1i0, float c1i1) {
  return ScorePair(PairScores{c0i0, c0i1, c1i0, c1i1});
}

TEST(ScorePairTest, AllCorrect) {
  const PairCorrect c = Score(0.9f, 0.1f, 0.2f, 0.8f);
  EXPECT_TRUE(c.text);
  EXPECT_TRUE(c.image);
  EXPECT_TRUE(c.group);
}

TEST(ScorePairTest, TextOnly) {
  const PairCorrect c = Score(0.5f, 0.3f, 0.45f, 0.4f);
  // text: 0.5 > 0.45 and 0.4 > 0.3 -> true; image: 0.5 > 0.3 and 0.4 > 0.45 -> false
  EXPECT_TRUE(c.text);
  EXPECT_FALSE(c.image);
  EXPECT_FALSE(c.group);
}

TEST(ScorePairTest, ImageOnly) {
  // image: c0i0 .5 > c0i1 .45 and c1i1 .4 > c1i0 .3 ; text: .5 > .3 but .4 > .45 false
  const PairCorrect c = Score(0.5f, 0.45f, 0.3f, 0.4f);
  EXPECT_FALSE(c.text);
  EXPECT_TRUE(c.image);
  EXPECT_FALSE(c.group);
}

TEST(ScorePairTest, EachClauseCanFailAloneExact) {
  // Only text clause 1 fails: c0i0 > c1i0 false.
  PairCorrect c0 = Score(0.3f, 0.1f, 0.35f, 0.8f);  // image: .3>.1, .8>.35 true
  EXPECT_FALSE(c0.text);
  EXPECT_TRUE(c0.image);
  // Only text clause 2 fails: c1i1 > c0i1 false, the other three comparisons true.
  // c0i0 > c1i0 (.9 > .2), c0i0 > c0i1 (.9 > .85), c1i1 > c1i0 (.8 > .2)
  PairCorrect c = Score(0.9f, 0.85f, 0.2f, 0.8f);
  EXPECT_FALSE(c.text);
  EXPECT_TRUE(c.image);
  EXPECT_FALSE(c.group);
  // Only image clause 1 fails: c0i0 > c0i1 false.
  c = Score(0.5f, 0.6f, 0.1f, 0.9f);  // text: .5>.1, .9>.6 true; image: .5>.6 false
  EXPECT_TRUE(c.text);
  EXPECT_FALSE(c.image);
  EXPECT_FALSE(c.group);
  // Only image clause 2 fails: c1i1 > c1i0 false.
  c = Score(0.9f, 0.1f, 0.7f, 0.6f);  // text: .9>.7, .6>.1 true; image: .9>.1, .6>.7 false
  EXPECT_TRUE(c.text);
  EXPECT_FALSE(c.image);
  EXPECT_FALSE(c.group);
}

TEST(ScorePairTest, TiesAreWrong) {
  // A tie in every single comparison in turn.
  EXPECT_FALSE(Score(0.5f, 0.1f, 0.5f, 0.8f).text);  // c0i0 == c1i0
  EXPECT_TRUE(Score(0.5f, 0.1f, 0.5f, 0.8f).image);
  EXPECT_FALSE(Score(0.9f, 0.8f, 0.1f, 0.8f).text);  // c1i1 == c0i1
  EXPECT_TRUE(Score(0.9f, 0.8f, 0.1f, 0.8f).image);  // .9 > .8 and .8 > .1
}

TEST(ScorePairTest, TiesAreWrongImageSide) {
  PairCorrect c = Score(0.5f, 0.5f, 0.1f, 0.9f);  // c0i0 == c0i1
  EXPECT_TRUE(c.text);
  EXPECT_FALSE(c.image);
  c = Score(0.9f, 0.1f, 0.6f, 0.6f);  // c1i1 == c1i0
  EXPECT_FALSE(c.image);
  EXPECT_TRUE(c.text);  // .9 > .6 and .6 > .1
}

TEST(ScorePairTest, AllEqualIsWrongEverywhere) {
  const PairCorrect c = Score(0.3f, 0.3f, 0.3f, 0.3f);
  EXPECT_FALSE(c.text);
  EXPECT_FALSE(c.image);
  EXPECT_FALSE(c.group);
}

TEST(ScorePairTest, NanIsWrong) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const PairCorrect c = Score(nan, 0.1f, 0.2f, 0.8f);
  EXPECT_FALSE(c.text);
  EXPECT_FALSE(c.image);
}

TEST(ScoreCaptionFoilTest, StrictGreater) {
  EXPECT_TRUE(ScoreCaptionFoil(0.3f, 0.2f));
  EXPECT_FALSE(ScoreCaptionFoil(0.2f, 0.3f));
  EXPECT_FALSE(ScoreCaptionFoil(0.25f, 0.25f));
  EXPECT_FALSE(ScoreCaptionFoil(std::numeric_limits<float>::quiet_NaN(), 0.f));
}

TEST(MetricsAggregatorTest, PerSubsetAndOverall) {
  MetricsAggregator agg;
  // subset "a": all correct, text only, nothing -> text 2/3, image 1/3, group 1/3
  agg.AddPair("a", Score(0.9f, 0.1f, 0.2f, 0.8f));
  agg.AddPair("a", Score(0.5f, 0.3f, 0.45f, 0.4f));
  agg.AddPair("a", Score(0.3f, 0.3f, 0.3f, 0.3f));
  // subset "b": image only, plus one skipped
  agg.AddPair("b", Score(0.5f, 0.45f, 0.3f, 0.4f));
  agg.AddSkipped("b");
  ASSERT_EQ(agg.subsets().size(), 2u);
  const SubsetMetrics& a = agg.subsets()[0];
  EXPECT_EQ(a.subset, "a");
  EXPECT_EQ(a.samples, 3);
  EXPECT_EQ(a.skipped, 0);
  EXPECT_DOUBLE_EQ(a.text_score(), 2.0 / 3);
  EXPECT_DOUBLE_EQ(a.image_score(), 1.0 / 3);
  EXPECT_DOUBLE_EQ(a.group_score(), 1.0 / 3);
  const SubsetMetrics& b = agg.subsets()[1];
  EXPECT_EQ(b.samples, 1);
  EXPECT_EQ(b.skipped, 1);
  EXPECT_DOUBLE_EQ(b.text_score(), 0.0);
  EXPECT_DOUBLE_EQ(b.image_score(), 1.0);
  const SubsetMetrics all = agg.Overall();
  EXPECT_EQ(all.subset, "overall");
  EXPECT_EQ(all.samples, 4);
  EXPECT_EQ(all.skipped, 1);
  EXPECT_DOUBLE_EQ(all.text_score(), 2.0 / 4);
  EXPECT_DOUBLE_EQ(all.image_score(), 2.0 / 4);
  EXPECT_DOUBLE_EQ(all.group_score(), 1.0 / 4);
}

TEST(MetricsAggregatorTest, PairwiseAccuracyAndEmpty) {
  MetricsAggregator agg;
  agg.AddCaptionFoil("counting", true);
  agg.AddCaptionFoil("counting", false);
  agg.AddCaptionFoil("counting", true);
  agg.AddCaptionFoil("plurals", false);
  EXPECT_DOUBLE_EQ(agg.subsets()[0].pairwise_accuracy(), 2.0 / 3);
  EXPECT_DOUBLE_EQ(agg.subsets()[1].pairwise_accuracy(), 0.0);
  EXPECT_DOUBLE_EQ(agg.Overall().pairwise_accuracy(), 0.5);
  SubsetMetrics empty;
  EXPECT_DOUBLE_EQ(empty.text_score(), 0.0);
  EXPECT_DOUBLE_EQ(empty.pairwise_accuracy(), 0.0);
}

}  // namespace
}  // namespace eqsim
