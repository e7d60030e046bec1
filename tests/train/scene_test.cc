// Fashion-MNIST loading and the scene generator, on the real dataset.
#include "model/data/scene.h"

#include <zlib.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/data/fashion_mnist.h"

namespace eqsim {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class FashionMnistTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto train = LoadFashionMnist(FashionMnistSplit::kTrain);
    ASSERT_TRUE(train.ok()) << train.status();
    train_ = new FashionMnist(std::move(*train));
    auto test = LoadFashionMnist(FashionMnistSplit::kTest);
    ASSERT_TRUE(test.ok()) << test.status();
    test_ = new FashionMnist(std::move(*test));
  }
  static void TearDownTestSuite() {
    delete train_;
    delete test_;
  }
  static FashionMnist* train_;
  static FashionMnist* test_;
};
FashionMnist* FashionMnistTest::train_ = nullptr;
FashionMnist* FashionMnistTest::test_ = nullptr;

std::string RunCommand(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

TEST_F(FashionMnistTest, LoadsBothSplitsWithBalancedClasses) {
  EXPECT_EQ(train_->count, 60000);
  EXPECT_EQ(test_->count, 10000);
  ASSERT_EQ(train_->pixels.size(), 60000u * 28 * 28);
  ASSERT_EQ(test_->labels.size(), 10000u);
  // Fashion-MNIST is balanced: 6000 / 1000 images per class.
  std::array<int, 10> train_counts{}, test_counts{};
  for (uint8_t l : train_->labels) ++train_counts[l];
  for (uint8_t l : test_->labels) ++test_counts[l];
  for (int c = 0; c < 10; ++c) {
    EXPECT_EQ(train_counts[c], 6000) << "class " << c;
    EXPECT_EQ(test_counts[c], 1000) << "class " << c;
  }
}

TEST_F(FashionMnistTest, MatchesAnIndependentPythonReader) {
  // A foreign reader (Python's gzip) gives the first 32 labels and the pixel sum of a few images.
  const std::string cmd =
      "/usr/bin/python3 -c \""
      "import gzip,sys\n"
      "d='/usr/share/datasets/fashion-mnist/'\n"
      "for p in ['train','t10k']:\n"
      "  L=gzip.open(d+p+'-labels-idx1-ubyte.gz').read()[8:]\n"
      "  I=gzip.open(d+p+'-images-idx3-ubyte.gz').read()[16:]\n"
      "  print(' '.join(str(x) for x in L[:32]))\n"
      "  print(' '.join(str(sum(I[k*784:(k+1)*784])) for k in [0,1,777,len(L)-1]))\n"
      "\"";
  std::istringstream out(RunCommand(cmd));
  for (const FashionMnist* data : {train_, test_}) {
    for (int i = 0; i < 32; ++i) {
      int label = -1;
      ASSERT_TRUE(out >> label) << "python reader gave no output";
      EXPECT_EQ(int{data->labels[i]}, label) << "label " << i;
    }
    for (int64_t k : {int64_t{0}, int64_t{1}, int64_t{777}, data->count - 1}) {
      long long sum = -1;
      ASSERT_TRUE(out >> sum);
      long long mine = 0;
      for (int p = 0; p < 784; ++p) mine += data->image(k)[p];
      EXPECT_EQ(mine, sum) << "image " << k;
    }
  }
}

// Writes `bytes` gzip-compressed to `path`.
void WriteGz(const fs::path& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), bytes.size()), static_cast<int>(bytes.size()));
  }
  gzclose(f);
}

std::string Be32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
}

class CorruptFashionMnistTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("eqsim_fm_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void WriteImages(uint32_t magic, uint32_t count, size_t pixel_bytes) {
    WriteGz(dir_ / "t10k-images-idx3-ubyte.gz",
            Be32(magic) + Be32(count) + Be32(28) + Be32(28) + std::string(pixel_bytes, '\x7f'));
  }
  void WriteLabels(uint32_t magic, uint32_t count, std::string labels) {
    WriteGz(dir_ / "t10k-labels-idx1-ubyte.gz", Be32(magic) + Be32(count) + labels);
  }
  fs::path dir_;
};

TEST_F(CorruptFashionMnistTest, SmallValidFileLoads) {
  WriteImages(0x803, 3, 3 * 784);
  WriteLabels(0x801, 3, std::string("\x01\x09\x00", 3));
  auto data = LoadFashionMnist(FashionMnistSplit::kTest, dir_.string());
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->count, 3);
  EXPECT_EQ(data->labels, (std::vector<uint8_t>{1, 9, 0}));
  EXPECT_EQ(data->image(2)[783], 0x7f);
}

TEST_F(CorruptFashionMnistTest, MissingFileNamesIt) {
  auto data = LoadFashionMnist(FashionMnistSplit::kTest, dir_.string());
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(data.status().message(), HasSubstr("t10k-images-idx3-ubyte.gz"));
}

TEST_F(CorruptFashionMnistTest, TruncatedImages) {
  WriteImages(0x803, 3, 2 * 784 + 100);
  WriteLabels(0x801, 3, std::string(3, '\x01'));
  auto data = LoadFashionMnist(FashionMnistSplit::kTest, dir_.string());
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(data.status().message(), HasSubstr("truncated"));
  EXPECT_THAT(data.status().message(), HasSubstr("t10k-images"));
}

TEST_F(CorruptFashionMnistTest, BadMagic) {
  WriteImages(0x801, 3, 3 * 784);
  auto data = LoadFashionMnist(FashionMnistSplit::kTest, dir_.string());
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(data.status().message(), HasSubstr("bad magic"));
}

TEST_F(CorruptFashionMnistTest, CountMismatchAndBadLabel) {
  WriteImages(0x803, 3, 3 * 784);
  WriteLabels(0x801, 4, std::string(4, '\x01'));
  auto data = LoadFashionMnist(FashionMnistSplit::kTest, dir_.string());
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(data.status().message(), HasSubstr("4 labels but the image file has 3"));

  WriteLabels(0x801, 3, std::string("\x01\x0c\x02", 3));
  data = LoadFashionMnist(FashionMnistSplit::kTest, dir_.string());
  ASSERT_FALSE(data.ok());
  EXPECT_THAT(data.status().message(), HasSubstr("label 1 is 12"));
}

TEST_F(CorruptFashionMnistTest, NotGzipGarbage) {
  std::ofstream(dir_ / "t10k-images-idx3-ubyte.gz") << "hello";
  auto data = LoadFashionMnist(FashionMnistSplit::kTest, dir_.string());
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
}

// ---- scenes ----

SceneItem Item(const FashionMnist& data, int label, int color, int nth = 0) {
  for (int64_t i = 0; i < data.count; ++i) {
    if (data.labels[i] == label && nth-- == 0) return SceneItem{label, color, i};
  }
  return {};
}

// Which of the four slots differ in pixels between two renders.
std::set<int> DifferingSlots(const cv::Mat& a, const cv::Mat& b) {
  std::set<int> slots;
  for (int slot = 0; slot < 4; ++slot) {
    const cv::Rect r((slot % 2) * 32, (slot / 2) * 32, 32, 32);
    cv::Mat diff;
    cv::absdiff(a(r), b(r), diff);
    if (cv::countNonZero(diff.reshape(1)) > 0) slots.insert(slot);
  }
  return slots;
}

TEST_F(FashionMnistTest, CaptionsMergeRunsInReadingOrder) {
  const auto& t = *test_;
  // Classes: 8 bag, 7 sneaker, 9 ankle boot; colours: 0 red, 2 blue, 5 orange.
  Scene s{{Item(t, 8, 0), Item(t, 8, 0, 1), Item(t, 7, 2)}};
  EXPECT_EQ(SceneCaption(s), "two red bags and a blue sneaker");
  Scene s2{{Item(t, 7, 2), Item(t, 8, 0), Item(t, 9, 5), Item(t, 8, 0, 1)}};
  EXPECT_EQ(SceneCaption(s2), "a blue sneaker, a red bag, an orange ankle boot and a red bag");
  Scene one{{Item(t, 0, 6)}};
  EXPECT_EQ(SceneCaption(one), "a white top");
  // Other styles only add fixed words around the plain list.
  std::set<std::string> styles;
  for (int k = 0; k < SceneCaptionStyles(); ++k) {
    const std::string c = SceneCaption(s, k);
    EXPECT_THAT(c, HasSubstr("two red bags and a blue sneaker"));
    styles.insert(c);
  }
  EXPECT_EQ(static_cast<int>(styles.size()), SceneCaptionStyles());
  EXPECT_GE(SceneCaptionStyles(), 2);
}

TEST_F(FashionMnistTest, RenderingIsDeterministicAndLocal) {
  std::mt19937_64 rng1(7), rng2(7);
  for (int k = 0; k < 50; ++k) {
    Scene a = RandomScene(*train_, 1, 4, rng1);
    Scene b = RandomScene(*train_, 1, 4, rng2);
    ASSERT_EQ(a.items, b.items);
    ASSERT_GE(a.items.size(), 1u);
    ASSERT_LE(a.items.size(), 4u);
    cv::Mat ra = RenderScene(a, *train_), rb = RenderScene(b, *train_);
    ASSERT_EQ(ra.type(), CV_8UC3);
    ASSERT_EQ(ra.rows, kSceneCanvas);
    ASSERT_EQ(ra.cols, kSceneCanvas);
    cv::Mat ne = ra != rb;
    EXPECT_EQ(cv::countNonZero(ne.reshape(1)), 0);
    // Filled slots have ink; empty slots stay black.
    for (int slot = 0; slot < 4; ++slot) {
      const cv::Rect r((slot % 2) * 32, (slot / 2) * 32, 32, 32);
      const int ink = cv::countNonZero(ra(r).reshape(1));
      if (slot < static_cast<int>(a.items.size())) {
        EXPECT_GT(ink, 0) << "slot " << slot;
      } else {
        EXPECT_EQ(ink, 0) << "slot " << slot;
      }
    }
  }
  // The tint follows the palette: a white item is grey-level, a red one has R > G, B.
  Scene red{{Item(*train_, 8, 0)}};
  cv::Mat img = RenderScene(red, *train_);
  cv::Scalar sum = cv::sum(img);
  EXPECT_GT(sum[0], 3 * sum[1]);  // RGB order: channel 0 is red
  EXPECT_GT(sum[0], 3 * sum[2]);
}

TEST_F(FashionMnistTest, SceneDistributionCoversItemsClassesAndColours) {
  std::mt19937_64 rng(1);
  std::set<size_t> sizes;
  std::set<int> labels, colors;
  for (int k = 0; k < 400; ++k) {
    Scene s = RandomScene(*train_, 1, 4, rng);
    sizes.insert(s.items.size());
    for (const auto& it : s.items) {
      labels.insert(it.label);
      colors.insert(it.color);
      EXPECT_EQ(int{train_->labels[it.image_index]}, it.label);
    }
  }
  EXPECT_EQ(sizes, (std::set<size_t>{1, 2, 3, 4}));
  EXPECT_EQ(labels.size(), 10u);
  EXPECT_EQ(colors.size(), SceneColorNames().size());
}

TEST_F(FashionMnistTest, MinimalChangesTouchOnlyTheSlotsTheyName) {
  std::mt19937_64 rng(2023);
  int done[4] = {0, 0, 0, 0};
  for (int k = 0; k < 400; ++k) {
    const Scene in = RandomScene(*test_, 1, 4, rng);
    const cv::Mat rin = RenderScene(in, *test_);
    const std::string cin = SceneCaption(in);
    const int n = static_cast<int>(in.items.size());
    Scene out;

    if (SwapTwoItems(in, rng, &out)) {
      ++done[0];
      ASSERT_EQ(out.items.size(), in.items.size());
      std::vector<int> changed;
      for (int i = 0; i < n; ++i) if (!(out.items[i] == in.items[i])) changed.push_back(i);
      ASSERT_EQ(changed.size(), 2u);
      EXPECT_EQ(out.items[changed[0]], in.items[changed[1]]);
      EXPECT_EQ(out.items[changed[1]], in.items[changed[0]]);
      EXPECT_EQ(DifferingSlots(rin, RenderScene(out, *test_)),
                (std::set<int>{changed[0], changed[1]}));
      EXPECT_NE(SceneCaption(out), cin);
    } else {
      // Impossible only when all items are of one kind.
      for (int i = 1; i < n; ++i) {
        EXPECT_EQ(in.items[i].label, in.items[0].label);
        EXPECT_EQ(in.items[i].color, in.items[0].color);
      }
    }

    ASSERT_TRUE(RecolorOneItem(in, rng, &out));
    ++done[1];
    {
      std::vector<int> changed;
      for (int i = 0; i < n; ++i) if (!(out.items[i] == in.items[i])) changed.push_back(i);
      ASSERT_EQ(changed.size(), 1u);
      EXPECT_EQ(out.items[changed[0]].label, in.items[changed[0]].label);
      EXPECT_EQ(out.items[changed[0]].image_index, in.items[changed[0]].image_index);
      EXPECT_NE(out.items[changed[0]].color, in.items[changed[0]].color);
      EXPECT_EQ(DifferingSlots(rin, RenderScene(out, *test_)), std::set<int>{changed[0]});
      EXPECT_NE(SceneCaption(out), cin);
    }

    if (ChangeCount(in, *test_, rng, &out)) {
      ++done[2];
      const int m = static_cast<int>(out.items.size());
      ASSERT_EQ(std::abs(m - n), 1);
      for (int i = 0; i < std::min(n, m); ++i) EXPECT_EQ(out.items[i], in.items[i]);
      const Scene& longer = m > n ? out : in;
      const SceneItem& extra = longer.items.back();
      const SceneItem& before = longer.items[longer.items.size() - 2];
      EXPECT_EQ(extra.label, before.label);
      EXPECT_EQ(extra.color, before.color);
      EXPECT_NE(extra.image_index, before.image_index);
      EXPECT_EQ(int{test_->labels[extra.image_index]}, extra.label);
      EXPECT_EQ(DifferingSlots(rin, RenderScene(out, *test_)), std::set<int>{std::max(n, m) - 1});
      EXPECT_NE(SceneCaption(out), cin);
    } else {
      EXPECT_EQ(n, 4);
    }

    ASSERT_TRUE(ReplaceOneItem(in, *test_, rng, &out));
    ++done[3];
    {
      std::vector<int> changed;
      for (int i = 0; i < n; ++i) if (!(out.items[i] == in.items[i])) changed.push_back(i);
      ASSERT_EQ(changed.size(), 1u);
      const SceneItem& a = in.items[changed[0]];
      const SceneItem& b = out.items[changed[0]];
      EXPECT_NE(a.label, b.label);
      EXPECT_EQ(a.color, b.color);
      EXPECT_EQ(int{test_->labels[b.image_index]}, b.label);
      EXPECT_EQ(DifferingSlots(rin, RenderScene(out, *test_)), std::set<int>{changed[0]});
      EXPECT_NE(SceneCaption(out), cin);
    }
  }
  for (int kind = 0; kind < 4; ++kind) EXPECT_GT(done[kind], 200) << "change kind " << kind;
}

}  // namespace
}  // namespace eqsim
