#include "model/bench/metrics.h"

namespace eqsim {
namespace {

double Fraction(int64_t num, int64_t den) {
  return den > 0 ? static_cast<double>(num) / static_cast<double>(den) : 0.0;
}

}  // namespace

PairCorrect ScorePair(const PairScores& s) {
  PairCorrect c;
  // Written as `a > b` so that ties and NaN are wrong.
  c.text = (s.c0_i0 > s.c1_i0) && (s.c1_i1 > s.c0_i1);
  c.image = (s.c0_i0 > s.c0_i1) && (s.c1_i1 > s.c1_i0);
  c.group = c.text && c.image;
  return c;
}

bool ScoreCaptionFoil(float caption, float foil) { return caption > foil; }

double SubsetMetrics::text_score() const { return Fraction(text_correct, samples); }
double SubsetMetrics::image_score() const { return Fraction(image_correct, samples); }
double SubsetMetrics::group_score() const { return Fraction(group_correct, samples); }
double SubsetMetrics::pairwise_accuracy() const { return Fraction(pairwise_correct, samples); }

void SubsetMetrics::AddPair(const PairCorrect& c) {
  ++samples;
  text_correct += c.text;
  image_correct += c.image;
  group_correct += c.group;
}

void SubsetMetrics::AddCaptionFoil(bool correct) {
  ++samples;
  pairwise_correct += correct;
}

void SubsetMetrics::Merge(const SubsetMetrics& o) {
  samples += o.samples;
  skipped += o.skipped;
  text_correct += o.text_correct;
  image_correct += o.image_correct;
  group_correct += o.group_correct;
  pairwise_correct += o.pairwise_correct;
}

SubsetMetrics& MetricsAggregator::Subset(const std::string& name) {
  for (auto& s : subsets_) {
    if (s.subset == name) return s;
  }
  subsets_.emplace_back();
  subsets_.back().subset = name;
  return subsets_.back();
}

void MetricsAggregator::AddPair(const std::string& subset, const PairCorrect& c) {
  Subset(subset).AddPair(c);
}
void MetricsAggregator::AddCaptionFoil(const std::string& subset, bool correct) {
  Subset(subset).AddCaptionFoil(correct);
}
void MetricsAggregator::AddScoredSingle(const std::string& subset) { ++Subset(subset).samples; }
void MetricsAggregator::AddSkipped(const std::string& subset) { ++Subset(subset).skipped; }

SubsetMetrics MetricsAggregator::Overall() const {
  SubsetMetrics all;
  all.subset = "overall";
  for (const auto& s : subsets_) all.Merge(s);
  return all;
}

}  // namespace eqsim
