// Training data sources: the built-in scene stream, manifests, Karpathy files, the loader.
#include "model/train/data_source.h"

#include <filesystem>
#include <fstream>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/text/word_tokenizer.h"
#include "model/train/batch_loader.h"
#include "model/train/trainer.h"
#include "opencv2/imgcodecs.hpp"

namespace eqsim {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("eqsim_ds_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string operator/(const std::string& s) const { return (path_ / s).string(); }

 private:
  fs::path path_;
};

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

// A real PNG: a 20 x 12 image with a coloured square, channels written in OpenCV's BGR.
void WritePng(const std::string& path, int shade) {
  cv::Mat m(12, 20, CV_8UC3, cv::Scalar(0, 0, 0));
  m(cv::Rect(2, 2, 8, 8)).setTo(cv::Scalar(shade, 255 - shade, 40));
  ASSERT_TRUE(cv::imwrite(path, m));
}

std::vector<std::string> Captions(const std::vector<TrainSample>& s) {
  std::vector<std::string> c;
  for (const auto& x : s) c.push_back(x.caption);
  return c;
}

// ---------------------------------------------------------------- fashion-mnist stream

TEST(SceneSourceTest, DeterministicFromSeedAndPosition) {
  DataSourceOptions o;
  o.seed = 5;
  auto a = OpenDataSource(o);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = OpenDataSource(o);
  ASSERT_TRUE(b.ok());
  int64_t pa = 0, pb = 0;
  std::vector<TrainSample> sa, sb;
  // Two batches of 16 from one source equal one batch of 16 from position 0 and one from
  // wherever the first ended: positions are all that a resume needs.
  ASSERT_TRUE((*a)->NextBatch(16, &pa, &sa).ok());
  const int64_t mid = pa;
  ASSERT_TRUE((*a)->NextBatch(16, &pa, &sa).ok());
  int64_t pc = mid;
  ASSERT_TRUE((*b)->NextBatch(16, &pc, &sb).ok());
  ASSERT_EQ(sa.size(), 32u);
  ASSERT_EQ(sb.size(), 16u);
  EXPECT_EQ(pc, pa);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(sa[16 + i].caption, sb[i].caption);
    cv::Mat ne = sa[16 + i].rgb != sb[i].rgb;
    EXPECT_EQ(cv::countNonZero(ne.reshape(1)), 0);
  }
  // Another seed gives another stream.
  o.seed = 6;
  auto c = OpenDataSource(o);
  ASSERT_TRUE(c.ok());
  std::vector<TrainSample> sc;
  ASSERT_TRUE((*c)->NextBatch(16, &pb, &sc).ok());
  const std::vector<std::string> ca = Captions(sa);
  EXPECT_NE(Captions(sc), std::vector<std::string>(ca.begin(), ca.begin() + 16));
}

TEST(SceneSourceTest, BatchCaptionsAreDistinctAndTwinsAreMinimalChanges) {
  DataSourceOptions o;
  o.seed = 1;
  o.twin_prob = 1.0;
  o.random_caption_style = false;
  auto src = OpenDataSource(o);
  ASSERT_TRUE(src.ok()) << src.status();
  int64_t pos = 0;
  std::vector<TrainSample> s;
  ASSERT_TRUE((*src)->NextBatch(64, &pos, &s).ok());
  ASSERT_EQ(s.size(), 64u);
  std::vector<std::string> caps = Captions(s);
  EXPECT_EQ(std::set<std::string>(caps.begin(), caps.end()).size(), 64u);
  int twins = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!s[i].is_twin) continue;
    ++twins;
    ASSERT_GT(i, 0u);
    EXPECT_FALSE(s[i - 1].is_twin);
    EXPECT_NE(s[i].caption, s[i - 1].caption);
    // A minimal change touches at most two of the four 32 x 32 slots.
    int slots = 0;
    for (int slot = 0; slot < 4; ++slot) {
      const cv::Rect r((slot % 2) * 32, (slot / 2) * 32, 32, 32);
      cv::Mat ne = s[i].rgb(r) != s[i - 1].rgb(r);
      slots += cv::countNonZero(ne.reshape(1)) > 0;
    }
    EXPECT_GE(slots, 1);
    EXPECT_LE(slots, 2);
  }
  EXPECT_GE(twins, 25);  // every scene wants a twin; a few collide or the batch ends
  EXPECT_LE(twins, 32);
}

TEST(SceneSourceTest, VocabularyCoversEveryCaptionTheStreamMakes) {
  auto words = WordTokenizer::BuildVocabulary(SceneVocabularyCorpus());
  auto tok = WordTokenizer::FromVocabulary(words);
  DataSourceOptions o;
  o.twin_prob = 0.5;
  auto src = OpenDataSource(o);
  ASSERT_TRUE(src.ok());
  int64_t pos = 0;
  std::vector<TrainSample> s;
  ASSERT_TRUE((*src)->NextBatch(256, &pos, &s).ok());
  for (const auto& x : s) {
    for (const std::string& w : SplitWords(x.caption)) {
      EXPECT_NE(tok->WordId(w), kWordUnk) << "'" << w << "' in '" << x.caption << "'";
    }
    auto ids = tok->Encode(x.caption);
    ASSERT_TRUE(ids.ok());
  }
}

TEST(SceneSourceTest, BadOptions) {
  DataSourceOptions o;
  o.twin_prob = 1.5;
  EXPECT_THAT(OpenDataSource(o).status().message(), HasSubstr("--twin-prob"));
  o.twin_prob = 0;
  o.max_items = 5;
  EXPECT_FALSE(OpenDataSource(o).ok());
  o.max_items = 4;
  o.spec = "imagenet";
  EXPECT_THAT(OpenDataSource(o).status().message(), HasSubstr("expected fashion-mnist"));
  o.spec = "fashion-mnist";
  o.fashion_mnist_dir = "/nonexistent";
  EXPECT_THAT(OpenDataSource(o).status().message(), HasSubstr("/nonexistent/train-images"));
}

TEST(HeldOutTest, HundredDistinctTestScenes) {
  auto test = LoadFashionMnist(FashionMnistSplit::kTest);
  ASSERT_TRUE(test.ok());
  HeldOutScenes a = MakeHeldOutScenes(*test, 100, 9), b = MakeHeldOutScenes(*test, 100, 9);
  ASSERT_EQ(a.captions.size(), 100u);
  EXPECT_EQ(a.captions, b.captions);
  EXPECT_EQ(std::set<std::string>(a.captions.begin(), a.captions.end()).size(), 100u);
  EXPECT_EQ(a.images[0].rows, 64);
}

// ---------------------------------------------------------------- manifests

TEST(ManifestTest, GoodBadAndCorruptRecords) {
  TempDir d;
  fs::create_directories(d.path() / "img");
  for (int i = 0; i < 4; ++i) WritePng(d / ("img/" + std::to_string(i) + ".png"), 60 * i);
  WriteText(d / "img/corrupt.png", "\x89PNG\r\n\x1a\n this is not really a png");
  const std::string manifest =
      "{\"image\": \"img/0.png\", \"caption\": \"a red square\"}\n"
      "\n"
      "{\"image\": \"img/1.png\", \"caption\": \"a green square\"}\r\n"
      "{\"image\": \"img/corrupt.png\", \"caption\": \"broken\"}\n"
      "{\"image\": \"img/missing.png\", \"caption\": \"gone\"}\n"
      "{\"image\": \"img/2.png\", \"caption\": \"   \"}\n"
      "{\"image\": \"img/3.png\", \"caption\": \"bad \xff byte\"}\n"
      "{\"image\": \"" + (d / "img/3.png") + "\", \"caption\": \"absolute path\"}\n";
  WriteText(d / "m.jsonl", manifest);
  DataSourceOptions o;
  o.spec = "manifest:" + (d / "m.jsonl");
  auto src = OpenDataSource(o);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->size(), 5);       // two bad captions dropped at parse time
  EXPECT_EQ((*src)->bad_count(), 2);
  auto bad = (*src)->bad_samples();
  ASSERT_EQ(bad.size(), 2u);
  EXPECT_THAT(bad[0].where, HasSubstr("m.jsonl:6"));
  EXPECT_THAT(bad[0].why, HasSubstr("whitespace"));
  EXPECT_THAT(bad[1].where, HasSubstr("m.jsonl:7"));
  EXPECT_THAT(bad[1].why, HasSubstr("UTF-8"));

  // Two epochs' worth: the corrupt and the missing image are counted once each and skipped.
  int64_t pos = 0;
  std::vector<TrainSample> s;
  ASSERT_TRUE((*src)->NextBatch(6, &pos, &s).ok());
  EXPECT_EQ((*src)->bad_count(), 4);
  bad = (*src)->bad_samples();
  ASSERT_EQ(bad.size(), 4u);
  std::string all;
  for (const auto& b : bad) all += b.where + ": " + b.why + "\n";
  EXPECT_THAT(all, HasSubstr("img/corrupt.png (line 4)"));
  EXPECT_THAT(all, HasSubstr("img/missing.png (line 5): file not found"));
  for (const auto& x : s) {
    EXPECT_THAT(x.caption, ::testing::AnyOf("a red square", "a green square", "absolute path"));
    EXPECT_EQ(x.rgb.type(), CV_8UC3);
    EXPECT_EQ(x.rgb.cols, 20);
  }
  // The RGB order is right: img/0.png was written as BGR (0, 255, 40) -> RGB (40, 255, 0).
  for (const auto& x : s) {
    if (x.caption != "a red square") continue;
    const cv::Vec3b px = x.rgb.at<cv::Vec3b>(5, 5);
    EXPECT_EQ(px[0], 40);
    EXPECT_EQ(px[1], 255);
    EXPECT_EQ(px[2], 0);
  }
}

TEST(ManifestTest, OverTheBadLimitFails) {
  TempDir d;
  WriteText(d / "m.jsonl",
            "{\"image\": \"a.png\", \"caption\": \"one\"}\n"
            "{\"image\": \"b.png\", \"caption\": \"two\"}\n"
            "{\"image\": \"c.png\", \"caption\": \"three\"}\n");
  WritePng(d / "c.png", 10);
  DataSourceOptions o;
  o.spec = "manifest:" + (d / "m.jsonl");
  o.max_bad_samples = 1;
  auto src = OpenDataSource(o);
  ASSERT_TRUE(src.ok()) << src.status();
  int64_t pos = 0;
  std::vector<TrainSample> s;
  absl::Status st = absl::OkStatus();
  for (int i = 0; i < 4 && st.ok(); ++i) st = (*src)->NextBatch(2, &pos, &s);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("--max-bad-samples=1"));
  EXPECT_THAT(st.message(), HasSubstr(".png"));
}

TEST(ManifestTest, MalformedLinesAreErrorsWithLineNumbers) {
  TempDir d;
  struct Case {
    std::string line, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"{\"image\": \"a.png\", \"caption\": \"x\"", "m.jsonl:2: not a JSON object"},
           {"[1, 2]", "m.jsonl:2: expected a JSON object, got array"},
           {"{\"caption\": \"x\"}", "m.jsonl:2: missing field 'image'"},
           {"{\"image\": \"a.png\", \"caption\": 3}", "m.jsonl:2: field 'caption': expected a string, got number"},
           {"{\"image\": \"\", \"caption\": \"x\"}", "m.jsonl:2: field 'image' is empty"}}) {
    WriteText(d / "m.jsonl", "{\"image\": \"a.png\", \"caption\": \"fine\"}\n" + c.line + "\n");
    DataSourceOptions o;
    o.spec = "manifest:" + (d / "m.jsonl");
    auto src = OpenDataSource(o);
    ASSERT_FALSE(src.ok()) << c.line;
    EXPECT_EQ(src.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(src.status().message(), HasSubstr(c.expect));
  }
  DataSourceOptions o;
  o.spec = "manifest:" + (d / "nope.jsonl");
  auto src = OpenDataSource(o);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(src.status().message(), HasSubstr("nope.jsonl"));
  // --twin-prob is for generated scenes only.
  o.spec = "manifest:" + (d / "m.jsonl");
  o.twin_prob = 0.5;
  EXPECT_THAT(OpenDataSource(o).status().message(), HasSubstr("--twin-prob needs"));
}

TEST(ManifestTest, ImageRootAndEpochPermutations) {
  TempDir d;
  fs::create_directories(d.path() / "root");
  std::string m;
  for (int i = 0; i < 5; ++i) {
    WritePng(d / ("root/" + std::to_string(i) + ".png"), i * 40);
    m += "{\"image\": \"" + std::to_string(i) + ".png\", \"caption\": \"c" + std::to_string(i) + "\"}\n";
  }
  WriteText(d / "m.jsonl", m);
  DataSourceOptions o;
  o.spec = "manifest:" + (d / "m.jsonl");
  o.image_root = d / "root";
  o.seed = 3;
  auto src = OpenDataSource(o);
  ASSERT_TRUE(src.ok()) << src.status();
  int64_t pos = 0;
  std::vector<TrainSample> s;
  ASSERT_TRUE((*src)->NextBatch(10, &pos, &s).ok());
  EXPECT_EQ((*src)->bad_count(), 0);
  EXPECT_EQ(pos, 10);
  // Each epoch is a permutation of all five records.
  std::vector<std::string> c = Captions(s);
  std::set<std::string> e1(c.begin(), c.begin() + 5), e2(c.begin() + 5, c.end());
  EXPECT_EQ(e1.size(), 5u);
  EXPECT_EQ(e2, e1);
}

// ---------------------------------------------------------------- karpathy

TEST(KarpathyTest, ReadsTheTrainSplit) {
  TempDir d;
  fs::create_directories(d.path() / "imgs/sub");
  WritePng(d / "imgs/a.jpg.png", 10);
  WritePng(d / "imgs/sub/b.png", 200);
  WriteText(d / "dataset.json", R"({"dataset": "flickr30k", "images": [
    {"filename": "a.jpg.png", "split": "train", "sentences": [{"raw": "A dog runs."}, {"raw": "A brown dog."}, {"raw": ""}]},
    {"filename": "b.png", "filepath": "sub", "split": "train", "sentences": [{"raw": "Two cats sleep."}]},
    {"filename": "c.png", "split": "test", "sentences": [{"raw": "Not in train."}]},
    {"filename": "gone.png", "split": "train", "sentences": [{"raw": "Missing image."}]}
  ]})");
  DataSourceOptions o;
  o.spec = "karpathy:" + (d / "dataset.json");
  o.image_root = d / "imgs";
  auto src = OpenDataSource(o);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->size(), 4);  // 2 + 1 + 1 sentences; the empty one is bad
  EXPECT_EQ((*src)->bad_count(), 1);
  EXPECT_THAT((*src)->bad_samples()[0].where, HasSubstr("images[0].sentences[2]"));
  auto corpus = (*src)->VocabularyCorpus();
  EXPECT_THAT(corpus, ::testing::UnorderedElementsAre("A dog runs.", "A brown dog.",
                                                      "Two cats sleep.", "Missing image."));
  int64_t pos = 0;
  std::vector<TrainSample> s;
  ASSERT_TRUE((*src)->NextBatch(4, &pos, &s).ok());  // needs more than one epoch
  EXPECT_EQ((*src)->bad_count(), 2);  // gone.png counted when met
  EXPECT_THAT((*src)->bad_samples()[1].where, HasSubstr("gone.png"));

  o.split = "test";
  auto test = OpenDataSource(o);
  ASSERT_TRUE(test.ok());
  EXPECT_EQ((*test)->size(), 1);
  o.split = "val";
  EXPECT_THAT(OpenDataSource(o).status().message(), HasSubstr("no usable image-caption pairs in split 'val'"));
}

TEST(KarpathyTest, StructuralErrorsNameTheField) {
  TempDir d;
  DataSourceOptions o;
  o.spec = "karpathy:" + (d / "k.json");
  WriteText(d / "k.json", R"({"images": [{"filename": "a.png", "split": "train", "sentences": []},
                                         {"split": "train", "sentences": []}]})");
  EXPECT_THAT(OpenDataSource(o).status().message(), HasSubstr("images[1]: missing field 'filename'"));
  WriteText(d / "k.json", R"({"images": [{"filename": "a.png", "split": "train", "sentences": [{"raw": 5}]}]})");
  EXPECT_THAT(OpenDataSource(o).status().message(), HasSubstr("images[0].sentences[0]"));
  WriteText(d / "k.json", R"({"pictures": []})");
  EXPECT_THAT(OpenDataSource(o).status().message(), HasSubstr("'images' list"));
  WriteText(d / "k.json", "{not json");
  EXPECT_THAT(OpenDataSource(o).status().message(), HasSubstr("not valid JSON"));
}

// ---------------------------------------------------------------- loader, retrieval

TEST(BatchLoaderTest, ProducesTheStreamInOrder) {
  DataSourceOptions o;
  o.seed = 11;
  auto src = OpenDataSource(o);
  ASSERT_TRUE(src.ok());
  auto tok = WordTokenizer::FromVocabulary(WordTokenizer::BuildVocabulary(SceneVocabularyCorpus()));
  config::ImagePreprocess pc;
  auto pre = ImagePreprocessor::Create(pc);
  ASSERT_TRUE(pre.ok());
  std::vector<std::string> loaded;
  {
    BatchLoader loader(src->get(), &*pre, tok.get(), 8, 0, 2);
    int64_t expect_start = 0;
    for (int i = 0; i < 3; ++i) {
      auto b = loader.Next();
      ASSERT_TRUE(b.ok()) << b.status();
      EXPECT_EQ(b->images.n, 8);
      EXPECT_EQ(b->images.height, 64);
      EXPECT_EQ(b->tokens.n, 8);
      EXPECT_EQ(b->tokens.length, 16);
      EXPECT_EQ(b->tokens.ids[0], kWordSos);
      EXPECT_EQ(b->start_position, expect_start);
      expect_start = b->end_position;
      loaded.insert(loaded.end(), b->captions.begin(), b->captions.end());
    }
  }  // the destructor stops the producer while it waits on a full queue
  auto src2 = OpenDataSource(o);
  int64_t pos = 0;
  std::vector<TrainSample> s;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*src2)->NextBatch(8, &pos, &s).ok());
  EXPECT_EQ(loaded, Captions(s));
}

TEST(BatchLoaderTest, ReportsTheSourceError) {
  TempDir d;
  WriteText(d / "m.jsonl", "{\"image\": \"a.png\", \"caption\": \"one\"}\n"
                           "{\"image\": \"b.png\", \"caption\": \"two\"}\n");
  DataSourceOptions o;
  o.spec = "manifest:" + (d / "m.jsonl");
  o.max_bad_samples = 1;
  auto src = OpenDataSource(o);
  ASSERT_TRUE(src.ok());
  auto tok = WordTokenizer::FromVocabulary({"one", "two"});
  auto pre = ImagePreprocessor::Create(config::ImagePreprocess());
  BatchLoader loader(src->get(), &*pre, tok.get(), 2, 0, 2);
  auto b = loader.Next();
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(b.status().message(), HasSubstr("--max-bad-samples"));
  EXPECT_FALSE(loader.Next().ok());  // stays failed
}

TEST(RetrievalTest, RanksAgainstTheDiagonal) {
  Matrix img(4, 3), txt(4, 3);
  const float v[4][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {1, 1, 0}};
  for (int i = 0; i < 4; ++i) {
    for (int k = 0; k < 3; ++k) img.at(i, k) = txt.at(i, k) = v[i][k];
  }
  RetrievalMetrics m = ComputeRetrieval(img, txt);
  EXPECT_EQ(m.n, 4);
  EXPECT_DOUBLE_EQ(m.i2t_r1, 1.0);
  EXPECT_DOUBLE_EQ(m.t2i_r1, 1.0);
  // Swap two captions: images 0 and 1 now miss at rank 1, find theirs in the top 5.
  for (int k = 0; k < 3; ++k) std::swap(txt.at(0, k), txt.at(1, k));
  m = ComputeRetrieval(img, txt);
  EXPECT_DOUBLE_EQ(m.i2t_r1, 0.5);
  EXPECT_DOUBLE_EQ(m.i2t_r5, 1.0);
  EXPECT_DOUBLE_EQ(m.t2i_r1, 0.5);
  // Ties count against: every caption identical.
  for (int i = 0; i < 4; ++i) txt.at(i, 0) = 1, txt.at(i, 1) = txt.at(i, 2) = 0;
  EXPECT_DOUBLE_EQ(ComputeRetrieval(img, txt).i2t_r1, 0.0);
}

}  // namespace
}  // namespace eqsim
