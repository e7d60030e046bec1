#include "model/bench/evaluator.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/image/npy.h"
#include "tests/bench/test_util.h"

namespace eqsim {
namespace {

using ::eqsim::testing::KeepScores;
using ::eqsim::testing::kPython;
using ::eqsim::testing::RootOpts;
using ::eqsim::testing::TempDir;
using ::eqsim::testing::WriteFile;
using ::testing::HasSubstr;

// Image files hold "IMG:<concept>"; texts are "<concept>" or "<concept>|<noise>". Every concept
// gets its own axis, so a caption matches exactly the images of its concept: a perfect model.
// "BAD..." image bytes and "" texts are rejected with InvalidArgument, naming the item.
class FakeSource : public EmbeddingSource {
 public:
  static constexpr int kDim = 64;

  absl::StatusOr<Matrix> EmbedImages(const std::vector<std::string>& items) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++image_calls;
    Matrix m(static_cast<int64_t>(items.size()), kDim);
    for (size_t i = 0; i < items.size(); ++i) {
      if (!absl::StartsWith(items[i], "IMG:")) {
        return absl::InvalidArgumentError(absl::StrCat("item ", i, ": not a fake image"));
      }
      if (fail_after_images >= 0 && images_seen >= fail_after_images) {
        return absl::UnavailableError("encoder went away");
      }
      ++images_seen;
      ++image_counts[items[i]];
      Fill(items[i].substr(4), m.row(i));
    }
    return m;
  }

  absl::StatusOr<Matrix> EmbedTexts(const std::vector<std::string>& texts) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++text_calls;
    Matrix m(static_cast<int64_t>(texts.size()), kDim);
    for (size_t i = 0; i < texts.size(); ++i) {
      if (texts[i].empty())
        return absl::InvalidArgumentError(absl::StrCat("text ", i, ": text is empty"));
      ++text_counts[texts[i]];
      std::string concept_name = texts[i].substr(0, texts[i].find('|'));
      Fill(concept_name, m.row(i));
      if (texts[i].find('|') != std::string::npos) {
        // Noise: a little of another axis, scaled (normalisation is the evaluator's job too).
        m.row(i)[(Axis(texts[i]) + 1) % kDim] += 0.25f;
      }
      for (int j = 0; j < kDim; ++j) m.row(i)[j] *= 3.0f;
    }
    return m;
  }

  int Axis(const std::string& concept_name) {
    auto it = axes_.find(concept_name);
    if (it != axes_.end()) return it->second;
    const int a = static_cast<int>(axes_.size()) % kDim;
    axes_[concept_name] = a;
    return a;
  }
  void Fill(const std::string& concept_name, float* row) { row[Axis(concept_name)] = 1.0f; }

  std::map<std::string, int> image_counts, text_counts;
  int image_calls = 0, text_calls = 0;
  int64_t images_seen = 0;
  int64_t fail_after_images = -1;

 private:
  std::mutex mu_;
  std::map<std::string, int> axes_;
};

// A benchmark of `n` pair samples over a small pool of images and captions (lots of reuse).
// Sample k uses images (k % 7, (k + 1) % 7) and captions of their concepts; every third sample
// has its captions swapped (the model gets it wrong).
Benchmark MakePairs(const TempDir& dir, int n) {
  for (int i = 0; i < 7; ++i) {
    WriteFile(dir / absl::StrCat("img/", i, ".png"), absl::StrCat("IMG:concept", i));
  }
  std::string json = "[";
  for (int k = 0; k < n; ++k) {
    const int a = k % 7, b = (k + 1) % 7;
    std::string c0 = absl::StrCat("concept", a), c1 = absl::StrCat("concept", b);
    if (k % 3 == 2) std::swap(c0, c1);
    absl::StrAppend(&json, k ? "," : "", "{\"image0\": \"", a, ".png\", \"image1\": \"", b,
                    ".png\", \"caption0\": \"", c0, "\", \"caption1\": \"", c1, "\"}");
  }
  json += "]";
  WriteFile(dir / "pairs.json", json);
  auto b = ReadBenchmark(BenchmarkFormat::kEqbenPairs, dir / "pairs.json", RootOpts(dir / "img"));
  EXPECT_TRUE(b.ok()) << b.status();
  return *std::move(b);
}

TEST(EvaluatorTest, PerfectAndSwappedSamplesAndDedup) {
  TempDir dir;
  Benchmark b = MakePairs(dir, 30);
  FakeSource src;
  EvalOptions opts;
  opts.batch_size = 4;
  opts.chunk_size = 8;
  opts.keep_scores = true;
  int64_t last_done = -1, progress_calls = 0;
  opts.progress = [&](int64_t done, int64_t total) {
    EXPECT_EQ(total, 30);
    EXPECT_GE(done, last_done);
    last_done = done;
    ++progress_calls;
  };
  auto r = Evaluate(b, src, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(last_done, 30);
  EXPECT_GT(progress_calls, 4);
  ASSERT_EQ(r->subsets.size(), 1u);
  // 10 of 30 samples (k % 3 == 2) have swapped captions: every clause fails for them.
  EXPECT_EQ(r->overall.samples, 30);
  EXPECT_EQ(r->overall.text_correct, 20);
  EXPECT_EQ(r->overall.image_correct, 20);
  EXPECT_EQ(r->overall.group_correct, 20);
  ASSERT_EQ(r->scores.size(), 120u);
  // Sample 0: c0 = concept0 = image0, c1 = concept1 = image1. Scores are cosines.
  EXPECT_FLOAT_EQ(r->scores[0], 1.0f);  // s(c0,i0)
  EXPECT_FLOAT_EQ(r->scores[1], 0.0f);  // s(c0,i1)
  EXPECT_FLOAT_EQ(r->scores[2], 0.0f);  // s(c1,i0)
  EXPECT_FLOAT_EQ(r->scores[3], 1.0f);  // s(c1,i1)
  // Sample 2 is swapped.
  EXPECT_FLOAT_EQ(r->scores[8], 0.0f);
  EXPECT_FLOAT_EQ(r->scores[9], 1.0f);

  // Dedup: each of the 7 images and 7 captions was embedded exactly once, although chunks of
  // 8 samples reuse them: embeddings stay cached while a later chunk needs them.
  EXPECT_EQ(src.image_counts.size(), 7u);
  for (const auto& [item, count] : src.image_counts) EXPECT_EQ(count, 1) << item;
  EXPECT_EQ(src.text_counts.size(), 7u);
  for (const auto& [item, count] : src.text_counts) EXPECT_EQ(count, 1) << item;
  EXPECT_EQ(r->images_embedded, 7);
  EXPECT_EQ(r->texts_embedded, 7);
  // Batches: 7 images in batches of 4 within the first chunk(s): never more than needed.
  EXPECT_LE(src.image_calls, 4);
}

TEST(EvaluatorTest, ResumeFromChunksGivesIdenticalResults) {
  TempDir dir;
  Benchmark b = MakePairs(dir, 45);
  EvalOptions opts;
  opts.batch_size = 5;
  opts.chunk_size = 10;
  opts.keep_scores = true;
  std::vector<std::string> persisted;
  opts.on_chunk = [&](const ChunkResult& c) {
    persisted.push_back(c.ToJson());
    return absl::OkStatus();
  };
  FakeSource full_src;
  auto full = Evaluate(b, full_src, opts);
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(persisted.size(), 5u);  // 45 samples in chunks of 10

  // An interrupted run: the encoder dies after some images; chunks finished so far persist.
  std::vector<std::string> partial;
  FakeSource dying;
  dying.fail_after_images = 6;  // chunk 0 needs 7 images (concepts 0..6 cycle within 10)
  EvalOptions o2 = opts;
  o2.on_chunk = [&](const ChunkResult& c) {
    partial.push_back(c.ToJson());
    return absl::OkStatus();
  };
  auto failed = Evaluate(b, dying, o2);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(partial.empty());

  // Resume from the first three persisted chunks (through their JSON form).
  EvalOptions o3 = opts;
  o3.on_chunk = nullptr;
  for (int i = 0; i < 3; ++i) {
    auto c = ChunkResult::FromJson(persisted[i]);
    ASSERT_TRUE(c.ok()) << c.status();
    o3.resume.push_back(*c);
  }
  FakeSource resumed_src;
  int64_t first_progress = -1;
  o3.progress = [&](int64_t done, int64_t) {
    if (first_progress < 0) first_progress = done;
  };
  auto resumed = Evaluate(b, resumed_src, o3);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(first_progress, 30);
  EXPECT_EQ(resumed->chunks_resumed, 3);
  EXPECT_EQ(resumed->overall.samples, full->overall.samples);
  EXPECT_EQ(resumed->overall.text_correct, full->overall.text_correct);
  EXPECT_EQ(resumed->overall.image_correct, full->overall.image_correct);
  EXPECT_EQ(resumed->overall.group_correct, full->overall.group_correct);
  ASSERT_EQ(resumed->scores.size(), full->scores.size());
  for (size_t i = 0; i < full->scores.size(); ++i) {
    EXPECT_EQ(resumed->scores[i], full->scores[i]) << i;
  }
  // Only the last two chunks (15 samples) were computed.
  int embedded_texts = 0;
  for (const auto& [t, n] : resumed_src.text_counts) embedded_texts += n;
  EXPECT_EQ(embedded_texts, 7);
  // Aggregating the persisted chunks alone gives the same result too.
  std::vector<ChunkResult> all;
  for (const auto& js : persisted) all.push_back(*ChunkResult::FromJson(js));
  auto agg = AggregateChunks(b, all, true);
  ASSERT_TRUE(agg.ok());
  EXPECT_EQ(agg->overall.group_correct, full->overall.group_correct);

  // A resume that does not fit is refused.
  EvalOptions bad = opts;
  bad.chunk_size = 7;
  bad.resume = {*ChunkResult::FromJson(persisted[0])};
  auto r = Evaluate(b, resumed_src, bad);
  EXPECT_EQ(r.status().message(),
            "resumed chunk 0 [0, 10) with 40 scores does not fit this benchmark (45 samples, "
            "chunk size 7, 4 scores per sample)");
  all.pop_back();
  EXPECT_EQ(AggregateChunks(b, all, true).status().message(),
            "chunk results cover 40 of 45 samples");
}

TEST(EvaluatorTest, UnreadableItemsSkipOnlyTheirSamples) {
  TempDir dir;
  WriteFile(dir / "img/a.png", "IMG:a");
  WriteFile(dir / "img/b.png", "IMG:b");
  WriteFile(dir / "img/corrupt.png", "BAD bytes");
  WriteFile(dir / "img/big.png", "IMG:" + std::string(2000, 'x'));
  WriteFile(dir / "pairs.json", R"([
    {"image0": "a.png", "image1": "b.png", "caption0": "a", "caption1": "b"},
    {"image0": "a.png", "image1": "corrupt.png", "caption0": "a", "caption1": "b"},
    {"image0": "a.png", "image1": "gone.png", "caption0": "a", "caption1": "b"},
    {"image0": "b.png", "image1": "a.png", "caption0": "", "caption1": "a"},
    {"image0": "big.png", "image1": "a.png", "caption0": "b", "caption1": "a"},
    {"image0": "b.png", "image1": "a.png", "caption0": "b", "caption1": "a"}
  ])");
  auto b = ReadBenchmark(BenchmarkFormat::kEqbenPairs, dir / "pairs.json", RootOpts(dir / "img"));
  ASSERT_TRUE(b.ok()) << b.status();
  FakeSource src;
  EvalOptions opts;
  opts.batch_size = 8;
  opts.max_image_bytes = 1000;
  opts.keep_scores = true;
  auto r = Evaluate(*b, src, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->overall.samples, 2);
  EXPECT_EQ(r->overall.skipped, 4);
  EXPECT_EQ(r->overall.group_correct, 2);
  ASSERT_EQ(r->skipped.size(), 4u);
  EXPECT_EQ(r->skipped[0].index, 1);
  EXPECT_EQ(r->skipped[0].reason, "image1 'corrupt.png': not a fake image");
  EXPECT_EQ(r->skipped[1].index, 2);
  EXPECT_EQ(r->skipped[1].reason, "image1 'gone.png': file not found");
  EXPECT_EQ(r->skipped[2].index, 3);
  EXPECT_EQ(r->skipped[2].reason, "caption0 '': text is empty");
  EXPECT_EQ(r->skipped[3].index, 4);
  EXPECT_THAT(r->skipped[3].reason, HasSubstr("image0 'big.png': "));
  EXPECT_THAT(r->skipped[3].reason, HasSubstr("2004 bytes, over the limit of 1000"));
  EXPECT_TRUE(std::isnan(r->scores[4]));  // sample 1
  EXPECT_FLOAT_EQ(r->scores[20], 1.0f);   // sample 5, s(c0,i0)
  const std::string json = EvalResultToJson(*r);
  EXPECT_THAT(json, HasSubstr("\"skipped_total\": 4"));
  EXPECT_THAT(json, HasSubstr("\"group_score\": 1.0"));
}

TEST(EvaluatorTest, CancelStopsBetweenBatches) {
  TempDir dir;
  Benchmark b = MakePairs(dir, 40);
  FakeSource src;
  std::atomic<bool> cancel{false};
  EvalOptions opts;
  opts.batch_size = 2;
  opts.chunk_size = 10;
  opts.cancel = &cancel;
  int chunks = 0;
  opts.on_chunk = [&](const ChunkResult&) {
    if (++chunks == 2) cancel = true;
    return absl::OkStatus();
  };
  auto r = Evaluate(b, src, opts);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(r.status().message(), "evaluation cancelled after 20 of 40 samples");
  // on_chunk errors abort too.
  opts.cancel = nullptr;
  opts.on_chunk = [](const ChunkResult&) { return absl::DataLossError("disk full"); };
  r = Evaluate(b, src, opts);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
}

TEST(EvaluatorTest, ValseAndLeaderboardScoreFilesRoundTripThroughNumpy) {
  TempDir dir;
  WriteFile(dir / "img/eqbenag/x.png", "IMG:dog");
  WriteFile(dir / "img/eqbensd/y.png", "IMG:cat");
  WriteFile(dir / "lb.json", R"([
    {"image": "eqbenag/x.png", "caption": "dog"},
    {"image": "eqbenag/x.png", "caption": "cat"},
    {"image": "eqbensd/y.png", "caption": "cat|noise"},
    {"image": "eqbensd/missing.png", "caption": "cat"},
    {"image": "eqbensd/y.png", "caption": "dog"}
  ])");
  auto b =
      ReadBenchmark(BenchmarkFormat::kEqbenLeaderboard, dir / "lb.json", RootOpts(dir / "img"));
  ASSERT_TRUE(b.ok()) << b.status();
  FakeSource src;
  auto r = Evaluate(*b, src, EvalOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->has_scores);  // always for the leaderboard
  ASSERT_EQ(r->scores.size(), 5u);
  ASSERT_EQ(r->subsets.size(), 2u);
  EXPECT_EQ(r->subsets[0].samples, 2);
  EXPECT_EQ(r->subsets[1].samples, 2);
  EXPECT_EQ(r->subsets[1].skipped, 1);
  ASSERT_TRUE(WriteScoresNpy(dir / "scores.npy", r->kind, r->scores).ok());
  const std::string script =
      "import numpy as np, sys, math\n"
      "a = np.load(sys.argv[1])\n"
      "assert a.dtype == np.float32 and a.shape == (5,), (a.dtype, a.shape)\n"
      "print(' '.join('nan' if math.isnan(v) else '%.6f' % v for v in a.tolist()))\n";
  WriteFile(dir / "check.py", script);
  std::string out;
  ASSERT_EQ(::eqsim::testing::RunShell(
                std::string(kPython) + " " + (dir / "check.py") + " " + (dir / "scores.npy"), &out),
            0)
      << out;
  const float noisy = 3.0f / std::sqrt(9.0f + 0.75f * 0.75f);  // cos with 0.25*3 off-axis
  EXPECT_EQ(out,
            absl::StrCat("1.000000 0.000000 ", absl::StrFormat("%.6f", noisy), " nan 0.000000\n"));

  // VALSE: [N, 2] = s(caption), s(foil).
  WriteFile(
      dir / "valse.json",
      R"({"1": {"dataset": "d", "linguistic_phenomena": "counting", "image_file": "eqbenag/x.png",
                      "caption": "dog", "foil": "cat", "mturk": {"caption": 3}},
                "2": {"dataset": "d", "linguistic_phenomena": "counting", "image_file": "eqbenag/x.png",
                      "caption": "cat", "foil": "dog", "mturk": {"caption": 2}}})");
  auto v = ReadBenchmark(BenchmarkFormat::kValse, dir / "valse.json", RootOpts(dir / "img"));
  ASSERT_TRUE(v.ok()) << v.status();
  auto vr = Evaluate(*v, src, KeepScores());
  ASSERT_TRUE(vr.ok()) << vr.status();
  EXPECT_DOUBLE_EQ(vr->overall.pairwise_accuracy(), 0.5);
  ASSERT_TRUE(WriteScoresNpy(dir / "valse.npy", vr->kind, vr->scores).ok());
  ASSERT_EQ(::eqsim::testing::RunShell(std::string(kPython) +
                                           " -c \"import numpy as np,sys; a=np.load(sys.argv[1]); "
                                           "print(a.shape, a.tolist())\" " +
                                           (dir / "valse.npy"),
                                       &out),
            0);
  EXPECT_EQ(out, "(2, 2) [[1.0, 0.0], [0.0, 1.0]]\n");
}

// A source that lets the evaluator's loader threads preprocess: "IMG:conceptN" -> a 1x1
// tensor holding N; embeddings are one-hot on axis N for images and for "conceptN" texts.
class PreprocessingSource : public EmbeddingSource {
 public:
  static int ConceptOf(const std::string& s) {
    const size_t p = s.find("concept");
    return p == std::string::npos ? -1 : std::atoi(s.c_str() + p + 7);
  }
  absl::StatusOr<Matrix> EmbedImages(const std::vector<std::string>&) override {
    return absl::InternalError("EmbedImages must not be called when preprocessing is supported");
  }
  absl::StatusOr<Matrix> EmbedTexts(const std::vector<std::string>& texts) override {
    Matrix m(static_cast<int64_t>(texts.size()), 16);
    for (size_t i = 0; i < texts.size(); ++i) m.row(i)[ConceptOf(texts[i])] = 1;
    return m;
  }
  bool SupportsPreprocessedImages() const override { return true; }
  absl::StatusOr<ImageTensor> PreprocessImage(const std::string& bytes) const override {
    ++preprocessed;
    if (!absl::StartsWith(bytes, "IMG:")) return absl::InvalidArgumentError("not an image");
    ImageTensor t;
    t.height = t.width = 1;
    t.data = {static_cast<float>(ConceptOf(bytes)), 0, 0};
    return t;
  }
  absl::StatusOr<Matrix> EmbedPreprocessedImages(
      const std::vector<const ImageTensor*>& images) override {
    ++embed_calls;
    Matrix m(static_cast<int64_t>(images.size()), 16);
    for (size_t i = 0; i < images.size(); ++i) m.row(i)[static_cast<int>(images[i]->data[0])] = 1;
    return m;
  }
  mutable std::atomic<int> preprocessed{0};
  int embed_calls = 0;
};

TEST(EvaluatorTest, PreprocessingSourcesGetTheSameScores) {
  TempDir dir;
  Benchmark b = MakePairs(dir, 30);
  WriteFile(dir / "img/3.png", "corrupt");  // images are read at evaluation time
  FakeSource bytes_src;
  PreprocessingSource pre_src;
  EvalOptions opts;
  opts.batch_size = 3;
  opts.chunk_size = 8;
  opts.threads = 3;
  opts.keep_scores = true;
  auto a = Evaluate(b, bytes_src, opts);
  auto c = Evaluate(b, pre_src, opts);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(pre_src.preprocessed.load(), 7);  // each distinct image once, on loader threads
  EXPECT_EQ(c->images_embedded, 6);
  EXPECT_EQ(c->overall.skipped, a->overall.skipped);
  EXPECT_GT(c->overall.skipped, 0);
  EXPECT_EQ(c->overall.group_correct, a->overall.group_correct);
  ASSERT_EQ(c->skipped.size(), a->skipped.size());
  EXPECT_EQ(c->skipped[0].reason, "image1 '3.png': not an image");
  for (size_t i = 0; i < a->scores.size(); ++i) {
    if (std::isnan(a->scores[i])) {
      EXPECT_TRUE(std::isnan(c->scores[i])) << i;
    } else {
      EXPECT_EQ(a->scores[i], c->scores[i]) << i;
    }
  }
}

TEST(ChunkResultTest, JsonRoundTripKeepsNanAndRejectsGarbage) {
  ChunkResult c;
  c.chunk = 3;
  c.begin = 30;
  c.end = 32;
  c.scores = {0.123456789f, std::nanf(""), -1e-30f, 7.0f, 1, 2, 3, 4};
  c.skipped = {{30, "image0 'x': file not found"}};
  auto back = ChunkResult::FromJson(c.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->chunk, 3);
  EXPECT_EQ(back->end, 32);
  ASSERT_EQ(back->scores.size(), 8u);
  EXPECT_EQ(back->scores[0], c.scores[0]);
  EXPECT_TRUE(std::isnan(back->scores[1]));
  EXPECT_EQ(back->scores[2], c.scores[2]);
  EXPECT_EQ(back->skipped, c.skipped);
  EXPECT_EQ(ChunkResult::FromJson("[1]").status().message(), "chunk result: not a JSON object");
  EXPECT_EQ(ChunkResult::FromJson(R"({"chunk": 1, "begin": 0})").status().message(),
            "chunk result: field 'end' missing or not an integer");
}

}  // namespace
}  // namespace eqsim
