#include "model/bench/generator.h"

#include <algorithm>
#include <map>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bench/evaluator.h"
#include "model/bench/readers.h"
#include "model/data/fashion_mnist.h"
#include "model/data/scene.h"
#include "model/image/preprocess.h"
#include "nlohmann/json.hpp"
#include "tests/bench/test_util.h"

namespace eqsim {
namespace {

using ::eqsim::testing::ReadFile;
using ::eqsim::testing::RootOpts;
using ::eqsim::testing::TempDir;

constexpr int kPerSubset = 12;

Scene SceneFromJson(const nlohmann::json& j) {
  Scene s;
  for (const auto& it : j) {
    s.items.push_back(SceneItem{it["label"].get<int>(), it["color"].get<int>(),
                                it["image_index"].get<int64_t>()});
  }
  return s;
}

cv::Mat Slot(const cv::Mat& img, int slot) {
  const int side = kSceneCanvas / 2;
  return img(cv::Rect((slot % 2) * side, (slot / 2) * side, side, side));
}

bool SameItem(const Scene& a, const Scene& b, int slot) {
  const bool ha = slot < static_cast<int>(a.items.size());
  const bool hb = slot < static_cast<int>(b.items.size());
  if (ha != hb) return false;
  return !ha || a.items[slot] == b.items[slot];
}

class GeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    GeneratorOptions opts;
    opts.out_dir = dir_->path();
    opts.per_subset = kPerSubset;
    opts.seed = 11;
    auto g = GenerateBenchmark(opts);
    ASSERT_TRUE(g.ok()) << g.status();
    gen_ = new GeneratedBenchmark(*g);
    auto data = LoadFashionMnist(FashionMnistSplit::kTest);
    ASSERT_TRUE(data.ok()) << data.status();
    data_ = new FashionMnist(*std::move(data));
  }
  static void TearDownTestSuite() {
    delete gen_;
    delete data_;
    delete dir_;
  }
  static TempDir* dir_;
  static GeneratedBenchmark* gen_;
  static FashionMnist* data_;
};
TempDir* GeneratorTest::dir_ = nullptr;
GeneratedBenchmark* GeneratorTest::gen_ = nullptr;
FashionMnist* GeneratorTest::data_ = nullptr;

TEST_F(GeneratorTest, WinogroundAndKubricLayoutsAgree) {
  ASSERT_EQ(gen_->samples, 4 * kPerSubset);
  auto wino =
      ReadBenchmark(BenchmarkFormat::kWinoground, gen_->winoground_jsonl, RootOpts(gen_->out_dir));
  ASSERT_TRUE(wino.ok()) << wino.status();
  ASSERT_EQ(wino->samples.size(), static_cast<size_t>(4 * kPerSubset));
  EXPECT_THAT(wino->subsets, ::testing::ElementsAre("location", "attribute", "counting", "object"));
  ASSERT_EQ(gen_->subset_lists.size(), 4u);
  size_t w = 0;
  for (const std::string& list : gen_->subset_lists) {
    auto pairs = ReadBenchmark(BenchmarkFormat::kEqbenPairs, list, RootOpts(gen_->out_dir));
    ASSERT_TRUE(pairs.ok()) << pairs.status();
    ASSERT_EQ(pairs->samples.size(), static_cast<size_t>(kPerSubset));
    for (const Sample& p : pairs->samples) {
      const Sample& s = wino->samples[w++];
      EXPECT_EQ(p.subset, s.subset);  // file stem == collapsed_tag
      EXPECT_EQ(p.captions, s.captions);
      EXPECT_EQ(p.images[0].path, s.images[0].path);
      EXPECT_EQ(p.images[1].path, s.images[1].path);
      EXPECT_TRUE(s.skip_reason.empty()) << s.skip_reason;
      EXPECT_NE(s.captions[0], s.captions[1]);
    }
  }
  auto lb = ReadBenchmark(BenchmarkFormat::kEqbenLeaderboard, gen_->leaderboard_json,
                          RootOpts(gen_->out_dir));
  ASSERT_TRUE(lb.ok()) << lb.status();
  ASSERT_EQ(lb->samples.size(), static_cast<size_t>(16 * kPerSubset));
  // Four entries per sample: (c0,i0) (c0,i1) (c1,i0) (c1,i1), subset from the path prefix.
  const Sample& s = wino->samples[5];
  const Sample* e = &lb->samples[5 * 4];
  EXPECT_EQ(e[0].subset, s.subset);
  EXPECT_EQ(e[1].images[0].path, s.images[1].path);
  EXPECT_EQ(e[1].captions[0], s.captions[0]);
  EXPECT_EQ(e[2].images[0].path, s.images[0].path);
  EXPECT_EQ(e[2].captions[0], s.captions[1]);
}

TEST_F(GeneratorTest, PairsDifferExactlyWhereTheirSubsetSays) {
  auto scenes = nlohmann::json::parse(ReadFile(gen_->scenes_json));
  ASSERT_EQ(scenes.size(), static_cast<size_t>(4 * kPerSubset));
  std::map<std::string, int> per_subset;
  for (const auto& entry : scenes) {
    const std::string subset = entry["subset"];
    ++per_subset[subset];
    const Scene s0 = SceneFromJson(entry["scene0"]), s1 = SceneFromJson(entry["scene1"]);
    SCOPED_TRACE(absl::StrCat("sample ", entry["id"].get<int>(), " (", subset, ")"));
    EXPECT_EQ(entry["caption0"].get<std::string>(), SceneCaption(s0));
    EXPECT_EQ(entry["caption1"].get<std::string>(), SceneCaption(s1));
    ASSERT_GE(s0.items.size(), 2u);
    ASSERT_LE(s0.items.size(), 4u);

    // Pixels: the PNGs are the renders of the described scenes, and per 32x32 slot they differ
    // exactly where the items differ.
    auto i0 = DecodeImageRgb(ReadFile(gen_->out_dir + "/" + entry["image0"].get<std::string>()));
    auto i1 = DecodeImageRgb(ReadFile(gen_->out_dir + "/" + entry["image1"].get<std::string>()));
    ASSERT_TRUE(i0.ok() && i1.ok());
    ASSERT_EQ(i0->rows, kSceneCanvas);
    EXPECT_EQ(cv::norm(*i0, RenderScene(s0, *data_), cv::NORM_INF), 0);
    EXPECT_EQ(cv::norm(*i1, RenderScene(s1, *data_), cv::NORM_INF), 0);
    std::vector<int> changed;
    for (int slot = 0; slot < kSceneMaxItems; ++slot) {
      const bool pixels_equal = cv::norm(Slot(*i0, slot), Slot(*i1, slot), cv::NORM_INF) == 0;
      EXPECT_EQ(pixels_equal, SameItem(s0, s1, slot)) << "slot " << slot;
      if (!pixels_equal) changed.push_back(slot);
    }

    // Semantics of each minimal change.
    if (subset == "location") {
      ASSERT_EQ(changed.size(), 2u);
      ASSERT_EQ(s0.items.size(), s1.items.size());
      EXPECT_EQ(s0.items[changed[0]], s1.items[changed[1]]);
      EXPECT_EQ(s0.items[changed[1]], s1.items[changed[0]]);
      // A bag-of-words model cannot separate the two captions.
      EXPECT_EQ(CaptionWordMultiset(SceneCaption(s0)), CaptionWordMultiset(SceneCaption(s1)));
    } else if (subset == "attribute") {
      ASSERT_EQ(changed.size(), 1u);
      const SceneItem &a = s0.items[changed[0]], &b = s1.items[changed[0]];
      EXPECT_EQ(a.label, b.label);
      EXPECT_EQ(a.image_index, b.image_index);
      EXPECT_NE(a.color, b.color);
    } else if (subset == "counting") {
      ASSERT_EQ(changed.size(), 1u);
      const Scene& big = s0.items.size() > s1.items.size() ? s0 : s1;
      const Scene& small = s0.items.size() > s1.items.size() ? s1 : s0;
      ASSERT_EQ(big.items.size(), small.items.size() + 1);
      const SceneItem& extra = big.items[changed[0]];
      EXPECT_EQ(changed[0], static_cast<int>(small.items.size()));
      const SceneItem& prev = big.items[changed[0] - 1];
      EXPECT_EQ(extra.label, prev.label);  // one more of the same kind
      EXPECT_EQ(extra.color, prev.color);
    } else if (subset == "object") {
      ASSERT_EQ(changed.size(), 1u);
      const SceneItem &a = s0.items[changed[0]], &b = s1.items[changed[0]];
      EXPECT_NE(a.label, b.label);
      EXPECT_EQ(a.color, b.color);
    } else {
      ADD_FAILURE() << "unknown subset";
    }
  }
  for (const auto& [subset, n] : per_subset) EXPECT_EQ(n, kPerSubset) << subset;
}

TEST_F(GeneratorTest, DeterministicFromTheSeed) {
  TempDir again, other;
  GeneratorOptions opts;
  opts.out_dir = again.path();
  opts.per_subset = kPerSubset;
  opts.seed = 11;
  ASSERT_TRUE(GenerateBenchmark(opts).ok());
  EXPECT_EQ(ReadFile(again / "annotations/winoground.jsonl"), ReadFile(gen_->winoground_jsonl));
  EXPECT_EQ(ReadFile(again / "location/00003_1.png"),
            ReadFile(gen_->out_dir + "/location/00003_1.png"));
  opts.out_dir = other.path();
  opts.seed = 12;
  ASSERT_TRUE(GenerateBenchmark(opts).ok());
  EXPECT_NE(ReadFile(other / "annotations/winoground.jsonl"), ReadFile(gen_->winoground_jsonl));
}

// A bag-of-words text encoder (sum of per-word axes) with an image encoder that sees the
// pixels (mean colour per slot): it cannot tell location captions apart, so every location
// sample is a text-side tie (wrong), while the other subsets' captions do differ.
class BagOfWordsSource : public EmbeddingSource {
 public:
  static constexpr int kDim = 256;
  absl::StatusOr<Matrix> EmbedImages(const std::vector<std::string>& items) override {
    Matrix m(static_cast<int64_t>(items.size()), kDim);
    for (size_t i = 0; i < items.size(); ++i) {
      auto rgb = DecodeImageRgb(items[i]);
      if (!rgb.ok()) return rgb.status();
      // Mean colour per slot, spread over all dimensions by a fixed random projection.
      std::mt19937 rng(5);
      std::uniform_real_distribution<float> u(-1.f, 1.f);
      for (int slot = 0; slot < 4; ++slot) {
        const cv::Scalar mean = cv::mean(Slot(*rgb, slot));
        for (int c = 0; c < 3; ++c) {
          for (int j = 0; j < kDim; ++j) m.row(i)[j] += static_cast<float>(mean[c] + 1) * u(rng);
        }
      }
    }
    return m;
  }
  absl::StatusOr<Matrix> EmbedTexts(const std::vector<std::string>& texts) override {
    Matrix m(static_cast<int64_t>(texts.size()), kDim);
    for (size_t i = 0; i < texts.size(); ++i) {
      for (const std::string& w : CaptionWordMultiset(texts[i])) {
        m.row(i)[std::hash<std::string>()(w) % kDim] += 1.0f;
      }
      m.row(i)[0] += 1.0f;  // never an all-zero row
    }
    return m;
  }
};

TEST_F(GeneratorTest, BagOfWordsModelCannotSeparateLocationPairs) {
  auto wino =
      ReadBenchmark(BenchmarkFormat::kWinoground, gen_->winoground_jsonl, RootOpts(gen_->out_dir));
  ASSERT_TRUE(wino.ok()) << wino.status();
  BagOfWordsSource bow;
  EvalOptions opts;
  opts.keep_scores = true;
  auto r = Evaluate(*wino, bow, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->subsets.size(), 4u);
  const SubsetMetrics& loc = r->subsets[0];
  ASSERT_EQ(loc.subset, "location");
  EXPECT_EQ(loc.samples, kPerSubset);
  EXPECT_EQ(loc.text_correct, 0);
  EXPECT_EQ(loc.group_correct, 0);
  for (int k = 0; k < kPerSubset; ++k) {
    EXPECT_EQ(r->scores[k * 4 + 0], r->scores[k * 4 + 2]) << "s(c0,i0) == s(c1,i0), sample " << k;
    EXPECT_EQ(r->scores[k * 4 + 1], r->scores[k * 4 + 3]) << "s(c0,i1) == s(c1,i1), sample " << k;
  }
  // Elsewhere the captions differ as bags of words: no such systematic tie.
  int differing = 0;
  for (int k = kPerSubset; k < 4 * kPerSubset; ++k) {
    differing += r->scores[k * 4 + 0] != r->scores[k * 4 + 2];
  }
  EXPECT_EQ(differing, 3 * kPerSubset);
}

TEST(GeneratorOptionsTest, BadOptions) {
  GeneratorOptions opts;
  EXPECT_EQ(GenerateBenchmark(opts).status().message(), "out_dir is not set");
  opts.out_dir = "/tmp/unused";
  opts.per_subset = 0;
  EXPECT_EQ(GenerateBenchmark(opts).status().message(),
            "per_subset must be in [1, 1000000], got 0");
  opts.per_subset = 1;
  opts.subsets = {"colour"};
  EXPECT_EQ(GenerateBenchmark(opts).status().message(),
            "unknown subset 'colour'; expected one of location, attribute, counting, object");
}

TEST(CaptionWordMultisetTest, IgnoresOrderNotCounts) {
  EXPECT_EQ(CaptionWordMultiset("a red bag and a blue shirt"),
            CaptionWordMultiset("a blue shirt and a red bag"));
  EXPECT_NE(CaptionWordMultiset("two red bags"), CaptionWordMultiset("a red bag"));
  EXPECT_THAT(CaptionWordMultiset("A red, bag."), ::testing::ElementsAre("a", "bag", "red"));
}

}  // namespace
}  // namespace eqsim
