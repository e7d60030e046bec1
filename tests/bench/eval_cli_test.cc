// eqsim-eval end to end: generate a benchmark, evaluate a native model through the CLI in two
// layouts, and check the numbers against an in-process Evaluate and each other.
#include <cmath>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bench/encoder_source.h"
#include "model/bench/evaluator.h"
#include "model/image/npy.h"
#include "nlohmann/json.hpp"
#include "tests/bench/native_repo.h"
#include "tests/bench/test_util.h"

namespace eqsim {
namespace {

using ::eqsim::testing::RootOpts;
using ::eqsim::testing::RunShell;
using ::eqsim::testing::TempDir;
using ::testing::HasSubstr;

std::string Bin() {
  const char* dir = std::getenv("EQSIM_BIN_DIR");
  return std::string(dir ? dir : EQSIM_BINARY_DIR "/bin") + "/eqsim-eval";
}

class EvalCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::string out;
    ASSERT_EQ(RunShell(Bin() + " generate --out " + (*dir_ / "bench") +
                           " --per-subset 6 --seed 3 --json --noprogress",
                       &out),
              0)
        << out;
    auto j = nlohmann::json::parse(out);
    ASSERT_EQ(j["samples"], 24);
    auto wino =
        ReadBenchmark(BenchmarkFormat::kWinoground, *dir_ / "bench/annotations/winoground.jsonl",
                      RootOpts(*dir_ / "bench"));
    ASSERT_TRUE(wino.ok()) << wino.status();
    std::vector<std::string> corpus;
    for (const auto& s : wino->samples)
      corpus.insert(corpus.end(), s.captions.begin(), s.captions.end());
    absl::Status st = ::eqsim::testing::MakeNativeRepo(*dir_ / "repo", "tiny", corpus);
    ASSERT_TRUE(st.ok()) << st;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string RunCmd(const std::string& format, const std::string& ann) {
    return Bin() + " run --repository " + (*dir_ / "repo") + " --model tiny --format " + format +
           " --annotations " + (*dir_ / ("bench/annotations/" + ann)) + " --image-root " +
           (*dir_ / "bench") + " --batch-size 7 --chunk-size 10 --noprogress";
  }
  static TempDir* dir_;
};
TempDir* EvalCliTest::dir_ = nullptr;

TEST_F(EvalCliTest, RunMatchesInProcessEvaluateAndLeaderboardScores) {
  std::string out;
  ASSERT_EQ(RunShell(RunCmd("winoground", "winoground.jsonl") + " --json --scores-out " +
                         (*dir_ / "pairs.npy") + " 2>/dev/null",
                     &out),
            0)
      << out;
  auto j = nlohmann::json::parse(out);
  ASSERT_EQ(j["result"]["subsets"].size(), 4u);
  EXPECT_EQ(j["result"]["overall"]["samples"], 24);
  EXPECT_EQ(j["version"], 1);

  // In-process, same model and data.
  auto model = LoadModelVersion(*dir_ / "repo", "tiny", 1);
  ASSERT_TRUE(model.ok()) << model.status();
  auto source = EncoderEmbeddingSource::FromModel(*model, {});
  ASSERT_TRUE(source.ok());
  auto bench =
      ReadBenchmark(BenchmarkFormat::kWinoground, *dir_ / "bench/annotations/winoground.jsonl",
                    RootOpts(*dir_ / "bench"));
  ASSERT_TRUE(bench.ok());
  EvalOptions opts;
  opts.keep_scores = true;
  auto r = Evaluate(*bench, **source, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  for (size_t i = 0; i < r->subsets.size(); ++i) {
    EXPECT_EQ(j["result"]["subsets"][i]["subset"], r->subsets[i].subset);
    EXPECT_DOUBLE_EQ(j["result"]["subsets"][i]["group_score"].get<double>(),
                     r->subsets[i].group_score());
    EXPECT_DOUBLE_EQ(j["result"]["subsets"][i]["text_score"].get<double>(),
                     r->subsets[i].text_score());
  }
  auto npy = ReadNpyFile(*dir_ / "pairs.npy");
  ASSERT_TRUE(npy.ok()) << npy.status();
  EXPECT_EQ(npy->shape, (std::vector<int64_t>{24, 4}));
  auto pair_scores = NpyAsFloat32(*npy);
  ASSERT_TRUE(pair_scores.ok());
  for (size_t i = 0; i < pair_scores->size(); ++i) {
    EXPECT_NEAR((*pair_scores)[i], r->scores[i], 1e-5) << i;
    EXPECT_FALSE(std::isnan((*pair_scores)[i]));
  }

  // The leaderboard layout of the same benchmark: entry 4k+m is score m of sample k.
  ASSERT_EQ(RunShell(RunCmd("eqben-leaderboard", "leaderboard.json") + " --scores-out " +
                         (*dir_ / "lb.npy") + " 2>/dev/null",
                     &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("location"));
  auto lb = ReadNpyFile(*dir_ / "lb.npy");
  ASSERT_TRUE(lb.ok()) << lb.status();
  EXPECT_EQ(lb->shape, (std::vector<int64_t>{96}));
  auto lb_scores = NpyAsFloat32(*lb);
  for (size_t i = 0; i < lb_scores->size(); ++i) {
    EXPECT_NEAR((*lb_scores)[i], (*pair_scores)[i], 1e-5) << i;
  }
}

TEST_F(EvalCliTest, TableSubsetsAndLimit) {
  std::string out;
  ASSERT_EQ(RunShell(RunCmd("eqben-pairs", "counting.json") + " --limit 4 2>/dev/null", &out), 0)
      << out;
  EXPECT_THAT(out, HasSubstr("subset"));
  EXPECT_THAT(out, HasSubstr("group"));
  EXPECT_THAT(out, ::testing::ContainsRegex("counting +4 +0 "));
  ASSERT_EQ(
      RunShell(RunCmd("winoground", "winoground.jsonl") + " --subsets object,attribute --json "
                                                          "2>/dev/null",
               &out),
      0);
  auto j = nlohmann::json::parse(out);
  ASSERT_EQ(j["result"]["subsets"].size(), 2u);
  EXPECT_EQ(j["result"]["subsets"][0]["subset"], "attribute");  // file order
  EXPECT_EQ(j["filtered_out"], 12);
}

TEST_F(EvalCliTest, ExitCodesAndErrors) {
  std::string out;
  EXPECT_EQ(RunShell(Bin() + " 2>&1", &out), 2);
  EXPECT_THAT(out, HasSubstr("missing command"));
  EXPECT_EQ(RunShell(Bin() + " frobnicate 2>&1", &out), 2);
  EXPECT_EQ(RunShell(RunCmd("cocotown", "winoground.jsonl") + " 2>&1", &out), 2);
  EXPECT_THAT(out, HasSubstr("unknown benchmark format 'cocotown'"));
  EXPECT_EQ(RunShell(RunCmd("eqben-pairs", "nope.json") + " 2>&1", &out), 1);
  EXPECT_THAT(out, HasSubstr("nope.json"));
  EXPECT_EQ(RunShell(Bin() + " run --repository " + (*dir_ / "repo") +
                         " --model absent --format winoground --annotations " +
                         (*dir_ / "bench/annotations/winoground.jsonl") + " --image-root " +
                         (*dir_ / "bench") + " 2>&1",
                     &out),
            1);
  EXPECT_THAT(out, HasSubstr("absent"));
  EXPECT_EQ(RunShell(Bin() + " --help 2>&1", &out), 0);  // help is not a failure
  EXPECT_THAT(out, HasSubstr("Flags from model/bench/eqsim_eval_main.cc"));
  EXPECT_THAT(out, HasSubstr("--per_subset"));
  EXPECT_EQ(RunShell(Bin() + " --no-such-flag >/dev/null 2>&1"), 1);
  EXPECT_EQ(RunShell(Bin() + " generate 2>&1", &out), 2);
  EXPECT_THAT(out, HasSubstr("--out"));
}

}  // namespace
}  // namespace eqsim
