// Winoground / EqBen text, image and group scores and VALSE pairwise accuracy (spec section 3),
// exactly as the released evaluation code computes them: strict comparisons, a tie is wrong,
// and a NaN score (never greater than anything) makes the comparison wrong too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace eqsim {

// The four similarities of one pair sample, in the order of the score files:
// s(c0,i0), s(c0,i1), s(c1,i0), s(c1,i1).
struct PairScores {
  float c0_i0 = 0, c0_i1 = 0, c1_i0 = 0, c1_i1 = 0;
};

struct PairCorrect {
  bool text = false;   // s(c0,i0) > s(c1,i0) and s(c1,i1) > s(c0,i1)
  bool image = false;  // s(c0,i0) > s(c0,i1) and s(c1,i1) > s(c1,i0)
  bool group = false;  // text and image
};

PairCorrect ScorePair(const PairScores& s);

// VALSE: s(caption) > s(foil).
bool ScoreCaptionFoil(float caption, float foil);

// Counts for one subset (or overall). Scores are fractions of `samples`; 0 when empty.
struct SubsetMetrics {
  std::string subset;
  int64_t samples = 0;  // scored samples
  int64_t skipped = 0;  // not scored (missing / unreadable image or caption)
  int64_t text_correct = 0;
  int64_t image_correct = 0;
  int64_t group_correct = 0;
  int64_t pairwise_correct = 0;  // VALSE

  double text_score() const;
  double image_score() const;
  double group_score() const;
  double pairwise_accuracy() const;

  void AddPair(const PairCorrect& c);
  void AddCaptionFoil(bool correct);
  void Merge(const SubsetMetrics& other);  // adds the counts (subset name kept)
};

// Aggregation over subsets: per-subset counts in order of first appearance, and the overall
// counts (the micro average: every scored sample counts once).
class MetricsAggregator {
 public:
  SubsetMetrics& Subset(const std::string& name);
  void AddPair(const std::string& subset, const PairCorrect& c);
  void AddCaptionFoil(const std::string& subset, bool correct);
  void AddScoredSingle(const std::string& subset);  // leaderboard entries: counts only
  void AddSkipped(const std::string& subset);

  const std::vector<SubsetMetrics>& subsets() const { return subsets_; }
  SubsetMetrics Overall() const;

 private:
  std::vector<SubsetMetrics> subsets_;
};

}  // namespace eqsim
