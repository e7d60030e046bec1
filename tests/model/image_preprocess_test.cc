// ImagePreprocessor: NATIVE and CLIP recipes checked against hand computations.
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/data/fashion_mnist.h"
#include "absl/strings/str_cat.h"
#include "model/image/npy.h"
#include "model/image/preprocess.h"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"
#include "tests/model/test_util.h"

namespace eqsim {
namespace {

using ::eqsim::testing::ProcessTempDir;

constexpr float kClipMean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
constexpr float kClipStd[3] = {0.26862954f, 0.26130258f, 0.27577711f};

cv::Mat RandomRgb(int w, int h, uint32_t seed) {
  cv::Mat m(h, w, CV_8UC3);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < m.total() * 3; ++i) m.data[i] = static_cast<uint8_t>(rng() & 0xff);
  return m;
}

// A smooth, non-separable pattern (for resampling checks).
cv::Mat SmoothRgb(int w, int h) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      m.at<cv::Vec3b>(y, x) = cv::Vec3b(
          static_cast<uint8_t>(127.5 + 127.5 * std::sin(x * 0.11) * std::cos(y * 0.07)),
          static_cast<uint8_t>((x * 3 + y * 5) % 256), static_cast<uint8_t>((x * y) % 251));
  return m;
}

ImagePreprocessor Make(config::ImagePreprocess::Recipe recipe, int size = 0) {
  config::ImagePreprocess cfg;
  cfg.set_recipe(recipe);
  cfg.set_size(size);
  auto p = ImagePreprocessor::Create(cfg);
  EXPECT_TRUE(p.ok()) << p.status();
  return *p;
}

float At(const ImageTensor& t, int c, int y, int x) {
  return t.data[(static_cast<size_t>(c) * t.height + y) * t.width + x];
}

// Inverse of the normalisation, back to the 0..255 level (for comparing resampled pixels).
float Level(const ImageTensor& t, int c, int y, int x, const float* mean, const float* std) {
  return (At(t, c, y, x) * std[c] + mean[c]) * 255.0f;
}

// Reference of PIL's bicubic resize written independently, in double precision: weights from
// the a = -0.5 kernel widened by the scale factor, horizontal pass rounded (half up, as PIL)
// and clipped to 8 bits, then the vertical pass.
std::vector<std::vector<double>> Weights(int in, int out, std::vector<int>* first) {
  const double scale = static_cast<double>(in) / out;
  const double fs = std::max(1.0, scale);
  std::vector<std::vector<double>> w(out);
  first->assign(out, 0);
  for (int o = 0; o < out; ++o) {
    const double center = (o + 0.5) * scale;
    const int lo = std::max(0, static_cast<int>(center - 2 * fs + 0.5));
    const int hi = std::min(in, static_cast<int>(center + 2 * fs + 0.5));
    double sum = 0;
    for (int i = lo; i < hi; ++i) {
      double x = std::abs((i - center + 0.5) / fs);
      const double v = x < 1 ? (1.5 * x - 2.5) * x * x + 1 : x < 2 ? ((-0.5 * x + 2.5) * x - 4) * x + 2 : 0;
      w[o].push_back(v);
      sum += v;
    }
    for (double& v : w[o]) v /= sum;
    (*first)[o] = lo;
  }
  return w;
}

uint8_t RoundHalfUp(double v) { return static_cast<uint8_t>(std::clamp(std::floor(v + 0.5), 0.0, 255.0)); }

cv::Mat ReferenceResize(const cv::Mat& in, int ow, int oh) {
  std::vector<int> fx, fy;
  const auto wx = Weights(in.cols, ow, &fx);
  const auto wy = Weights(in.rows, oh, &fy);
  cv::Mat tmp(in.rows, ow, CV_8UC3);
  for (int y = 0; y < in.rows; ++y)
    for (int x = 0; x < ow; ++x)
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (size_t k = 0; k < wx[x].size(); ++k) s += wx[x][k] * in.at<cv::Vec3b>(y, fx[x] + k)[c];
        tmp.at<cv::Vec3b>(y, x)[c] = RoundHalfUp(s);
      }
  if (oh == in.rows) return tmp;
  cv::Mat out(oh, ow, CV_8UC3);
  for (int y = 0; y < oh; ++y)
    for (int x = 0; x < ow; ++x)
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (size_t k = 0; k < wy[y].size(); ++k) s += wy[y][k] * tmp.at<cv::Vec3b>(fy[y] + k, x)[c];
        out.at<cv::Vec3b>(y, x)[c] = RoundHalfUp(s);
      }
  return out;
}

TEST(ClipRecipe, DefaultsAndExactNormalisation) {
  const ImagePreprocessor p = Make(config::ImagePreprocess::CLIP);
  EXPECT_EQ(p.size(), 224);
  EXPECT_THAT(p.Describe(), ::testing::StartsWith("clip 224 bicubic+centre-crop"));
  const cv::Mat rgb = RandomRgb(224, 224, 1);
  const ImageTensor t = p.FromRgb(rgb);
  ASSERT_EQ(t.height, 224);
  ASSERT_EQ(t.width, 224);
  ASSERT_EQ(t.data.size(), 3u * 224 * 224);
  for (int y : {0, 17, 223})
    for (int x : {0, 100, 223})
      for (int c = 0; c < 3; ++c) {
        const float v = rgb.at<cv::Vec3b>(y, x)[c];
        EXPECT_FLOAT_EQ(At(t, c, y, x), (v / 255.0f - kClipMean[c]) / kClipStd[c]);
      }
  // A hand-worked pixel: red 255 -> (1 - 0.48145466) / 0.26862954 = 1.93033...
  cv::Mat red(224, 224, CV_8UC3, cv::Scalar(255, 0, 0));
  EXPECT_NEAR(At(p.FromRgb(red), 0, 5, 5), 1.9303361, 1e-5);
  EXPECT_NEAR(At(p.FromRgb(red), 1, 5, 5), -1.7520971, 1e-5);
}

TEST(ClipRecipe, CentreCropUsesTorchvisionOffsets) {
  const ImagePreprocessor p = Make(config::ImagePreprocess::CLIP);
  // Short side already 224: no resampling, only the crop. Offsets int(round(d / 2)) with
  // Python's round-half-even: 76 -> 38, 1 -> 0 (0.5 rounds to 0), 3 -> 2 (1.5 rounds to 2).
  for (auto [w, h, dx, dy] : std::vector<std::array<int, 4>>{{300, 224, 38, 0}, {225, 224, 0, 0},
                                                              {227, 224, 2, 0}, {224, 301, 0, 38}}) {
    SCOPED_TRACE(::testing::Message() << w << "x" << h);
    const cv::Mat rgb = RandomRgb(w, h, w * 1000 + h);
    const ImageTensor t = p.FromRgb(rgb);
    for (int y : {0, 111, 223})
      for (int x : {0, 57, 223})
        for (int c = 0; c < 3; ++c)
          EXPECT_NEAR(Level(t, c, y, x, kClipMean, kClipStd), rgb.at<cv::Vec3b>(y + dy, x + dx)[c], 1e-3);
  }
}

TEST(ClipRecipe, BicubicMatchesIndependentPilReference) {
  const ImagePreprocessor p = Make(config::ImagePreprocess::CLIP);
  // (w, h) -> resized size computed as torchvision does: short side 224, long int(224*l/s).
  struct Case { int w, h, rw, rh; };
  for (const Case& c : {Case{448, 448, 224, 224}, Case{640, 480, 298, 224}, Case{112, 100, 250, 224},
                        Case{333, 517, 224, 347}}) {
    SCOPED_TRACE(::testing::Message() << c.w << "x" << c.h);
    const cv::Mat rgb = SmoothRgb(c.w, c.h);
    const cv::Mat ref = ReferenceResize(rgb, c.rw, c.rh);
    const cv::Mat ours = PilBicubicResize(rgb, c.rw, c.rh);
    ASSERT_EQ(ours.cols, c.rw);
    ASSERT_EQ(ours.rows, c.rh);
    cv::Mat diff;
    cv::absdiff(ours, ref, diff);
    double max_diff;
    cv::minMaxLoc(diff.reshape(1), nullptr, &max_diff);
    EXPECT_LE(max_diff, 1.0);  // fixed point vs double: one level, only next to exact ties
    EXPECT_GT(cv::countNonZero(diff.reshape(1) == 0), 0.999 * diff.total() * 3);
    // The tensor is the centre crop of that resize.
    const ImageTensor t = p.FromRgb(rgb);
    const int top = static_cast<int>(std::nearbyint((c.rh - 224) / 2.0));
    const int left = static_cast<int>(std::nearbyint((c.rw - 224) / 2.0));
    for (int y : {0, 100, 223})
      for (int x : {0, 150, 223})
        for (int ch = 0; ch < 3; ++ch)
          EXPECT_NEAR(Level(t, ch, y, x, kClipMean, kClipStd), ours.at<cv::Vec3b>(y + top, x + left)[ch], 1e-3);
  }
}

// A foreign reference: torch 1.13's antialiased bicubic interpolation (the same a = -0.5
// kernel as PIL, computed in float without PIL's 8-bit intermediate) from /usr/bin/python3.
TEST(ClipRecipe, BicubicAgreesWithTorchAntialiasedInterpolate) {
  const std::string dir = ProcessTempDir();
  // Smooth fields plus a fine texture (period ~11 px, so the kernel and the antialiasing
  // matter), kept inside 28..228 so nothing clips: the only differences left are PIL's 8-bit
  // roundings.
  cv::Mat rgb(263, 347, CV_8UC3);
  for (int y = 0; y < rgb.rows; ++y)
    for (int x = 0; x < rgb.cols; ++x)
      for (int c = 0; c < 3; ++c)
        rgb.at<cv::Vec3b>(y, x)[c] = static_cast<uint8_t>(
            128 + 60 * std::sin(x * (0.03 + 0.01 * c) + y * 0.02) * std::cos(y * 0.045 - c) +
            40 * std::sin(x * 0.55 + y * (0.3 + 0.1 * c)));
  NpyArray a;
  a.dtype = "|u1";
  a.shape = {rgb.rows, rgb.cols, 3};
  a.data.assign(reinterpret_cast<const char*>(rgb.data), rgb.total() * 3);
  ASSERT_TRUE(WriteNpyFile(dir + "/torch_in.npy", *WriteNpy(a)).ok());
  const std::vector<std::pair<int, int>> sizes = {{224, 170}, {100, 76}, {297, 224}, {640, 500}, {347, 100}};
  std::string py = "import numpy as np, torch\nx = torch.from_numpy(np.load('" + dir +
                   "/torch_in.npy')).permute(2, 0, 1)[None].float()\n";
  for (size_t i = 0; i < sizes.size(); ++i) {
    py += absl::StrCat("np.save('", dir, "/torch_out", i, ".npy', torch.nn.functional.interpolate(x, size=(",
                       sizes[i].second, ", ", sizes[i].first,
                       "), mode='bicubic', antialias=True, align_corners=False)[0].permute(1, 2, 0).numpy())\n");
  }
  std::ofstream(dir + "/torch_ref.py") << py;
  ASSERT_EQ(std::system(("/usr/bin/python3 " + dir + "/torch_ref.py").c_str()), 0);
  for (size_t i = 0; i < sizes.size(); ++i) {
    const auto [ow, oh] = sizes[i];
    SCOPED_TRACE(::testing::Message() << ow << "x" << oh);
    auto ref = ReadNpyFile(absl::StrCat(dir, "/torch_out", i, ".npy"));
    ASSERT_TRUE(ref.ok()) << ref.status();
    auto values = NpyAsFloat32(*ref);
    ASSERT_TRUE(values.ok()) << values.status();
    ASSERT_EQ(values->size(), static_cast<size_t>(ow) * oh * 3);
    const cv::Mat ours = PilBicubicResize(rgb, ow, oh);
    double max_diff = 0, sum_diff = 0;
    for (int y = 0; y < oh; ++y)
      for (int x = 0; x < ow; ++x)
        for (int c = 0; c < 3; ++c) {
          const double d = std::abs(ours.at<cv::Vec3b>(y, x)[c] - (*values)[(static_cast<size_t>(y) * ow + x) * 3 + c]);
          max_diff = std::max(max_diff, d);
          sum_diff += d;
        }
    // PIL rounds to 8 bits twice: at most ~1.2 levels, ~0.3 on average. OpenCV's INTER_CUBIC
    // (a = -0.75, no antialiasing) is off by up to 4 (224 x 170) and 11 (100 x 76) levels here.
    EXPECT_LT(max_diff, 1.5);
    EXPECT_LT(sum_diff / (ow * oh * 3), 0.4);
  }
}

TEST(ClipRecipe, CropOfResizeIsBitIdentical) {
  const cv::Mat rgb = SmoothRgb(301, 211);
  std::mt19937 rng(3);
  for (auto [ow, oh] : std::vector<std::pair<int, int>>{{150, 100}, {602, 422}, {301, 100}, {90, 211}}) {
    const cv::Mat full = PilBicubicResize(rgb, ow, oh);
    for (int t = 0; t < 5; ++t) {
      const int x = static_cast<int>(rng() % ow), y = static_cast<int>(rng() % oh);
      const cv::Rect r(x, y, 1 + static_cast<int>(rng() % (ow - x)), 1 + static_cast<int>(rng() % (oh - y)));
      const cv::Mat crop = PilBicubicResizeCrop(rgb, ow, oh, r);
      ASSERT_EQ(crop.size(), r.size());
      EXPECT_EQ(cv::norm(crop, full(r), cv::NORM_INF), 0) << ow << "x" << oh << " " << r;
    }
  }
}

TEST(ClipRecipe, ExtremeAspectRatioNeedsNoHugeIntermediate) {
  // 40000 x 2: a full resize would be 4480000 x 224 (3 GB); only the crop is computed.
  cv::Mat strip(2, 40000, CV_8UC3);
  for (int x = 0; x < 40000; ++x) strip.at<cv::Vec3b>(0, x) = strip.at<cv::Vec3b>(1, x) = cv::Vec3b::all(x * 255 / 39999);
  const ImageTensor t = Make(config::ImagePreprocess::CLIP).FromRgb(strip);
  ASSERT_EQ(t.width, 224);
  for (int y = 1; y < 224; ++y) EXPECT_FLOAT_EQ(At(t, 0, y, 100), At(t, 0, 0, 100));
  for (int x = 1; x < 224; ++x) EXPECT_GE(At(t, 1, 50, x), At(t, 1, 50, x - 1));
  // The centre of a 0..255 ramp is mid-grey.
  EXPECT_NEAR(Level(t, 0, 0, 112, kClipMean, kClipStd), 127.5, 1.0);
}

TEST(ClipRecipe, HandComputedDownscaleWeights) {
  // 8 -> 4 columns (factor 2): output column 0 has centre 1.0, support 4, taps x = 0..4 with
  // kernel arguments (x - 0.5) / 2 = -0.25, 0.25, 0.75, 1.25, 1.75.
  auto k = [](double x) {
    x = std::abs(x);
    return x < 1 ? 1.5 * x * x * x - 2.5 * x * x + 1 : -0.5 * x * x * x + 2.5 * x * x - 4 * x + 2;
  };
  const double w[5] = {k(-0.25), k(0.25), k(0.75), k(1.25), k(1.75)};
  const double sum = w[0] + w[1] + w[2] + w[3] + w[4];
  cv::Mat row(1, 8, CV_8UC3);
  const int v[8] = {0, 40, 80, 120, 160, 200, 240, 250};
  for (int x = 0; x < 8; ++x) row.at<cv::Vec3b>(0, x) = cv::Vec3b::all(v[x]);
  double expected = 0;
  for (int i = 0; i < 5; ++i) expected += w[i] / sum * v[i];
  const cv::Mat out = PilBicubicResize(row, 4, 1);
  EXPECT_NEAR(out.at<cv::Vec3b>(0, 0)[0], expected, 0.5 + 1e-9);
  EXPECT_EQ(out.at<cv::Vec3b>(0, 0)[0], static_cast<int>(std::floor(expected + 0.5)));
}

TEST(ClipRecipe, ConstantImageStaysConstant) {
  const ImagePreprocessor p = Make(config::ImagePreprocess::CLIP);
  for (cv::Size s : {cv::Size(1, 1), cv::Size(50, 700), cv::Size(1000, 333)}) {
    const ImageTensor t = p.FromRgb(cv::Mat(s, CV_8UC3, cv::Scalar(13, 200, 77)));
    for (size_t i = 0; i < t.data.size(); i += 997) {
      const int c = static_cast<int>(i / (224 * 224));
      const float level = c == 0 ? 13 : c == 1 ? 200 : 77;
      EXPECT_FLOAT_EQ(t.data[i], (level / 255.0f - kClipMean[c]) / kClipStd[c]);
    }
  }
}

TEST(NativeRecipe, DefaultsShrinkAveragesAndGrowInterpolates) {
  const ImagePreprocessor p = Make(config::ImagePreprocess::NATIVE);
  EXPECT_EQ(p.size(), 64);
  EXPECT_THAT(p.Describe(), ::testing::StartsWith("native 64"));
  // 128 -> 64 with area interpolation: every output is the mean of a 2x2 block.
  cv::Mat big(128, 128, CV_8UC3);
  for (int y = 0; y < 128; ++y)
    for (int x = 0; x < 128; ++x)
      big.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(10 * (x % 2) + 20 * (y % 2) + (x / 2)),
                                          static_cast<uint8_t>(4 * (y / 2)), 255 * (x % 2));
  const ImageTensor t = p.FromRgb(big);
  for (int y : {0, 31, 63})
    for (int x : {0, 10, 63}) {
      EXPECT_FLOAT_EQ(At(t, 0, y, x), ((15.0f + x) / 255.0f - 0.5f) / 0.5f);
      EXPECT_FLOAT_EQ(At(t, 1, y, x), ((4.0f * y) / 255.0f - 0.5f) / 0.5f);
    }
  // Blue alternates 0 / 255: the area mean is 127.5, rounded to 128.
  EXPECT_FLOAT_EQ(At(t, 2, 5, 5), (128.0f / 255.0f - 0.5f) / 0.5f);
  // 64 x 64 input: untouched, just normalised.
  const cv::Mat same = RandomRgb(64, 64, 9);
  const ImageTensor u = p.FromRgb(same);
  EXPECT_FLOAT_EQ(At(u, 1, 7, 9), (same.at<cv::Vec3b>(7, 9)[1] / 255.0f - 0.5f) / 0.5f);
}

TEST(NativeRecipe, MixedAxesAverageTheShrinkingOne) {
  // 192 wide, 16 high -> 64 x 64: column triples are averaged (area), rows interpolated.
  cv::Mat img(16, 192, CV_8UC3);
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 192; ++x) img.at<cv::Vec3b>(y, x) = cv::Vec3b::all(x % 3 == 2 ? 240 : 0);
  const ImageTensor t = Make(config::ImagePreprocess::NATIVE).FromRgb(img);
  const float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.5f, 0.5f, 0.5f};
  // Bilinear along x would sample column 3x + 1 of the stripes (all 0: aliasing); area gives
  // the mean 80 everywhere.
  for (int y : {0, 20, 63})
    for (int x : {0, 31, 63}) EXPECT_NEAR(Level(t, 0, y, x, mean, std), 80.0, 1e-3);
}

TEST(NativeRecipe, RealFashionMnistGrowsSmoothly) {
  auto data = LoadFashionMnist(FashionMnistSplit::kTest);
  ASSERT_TRUE(data.ok()) << data.status();
  const cv::Mat gray(28, 28, CV_8UC1, const_cast<uint8_t*>(data->image(0)));
  cv::Mat rgb;
  cv::cvtColor(gray, rgb, cv::COLOR_GRAY2RGB);
  const float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.5f, 0.5f, 0.5f};
  const ImageTensor t = Make(config::ImagePreprocess::NATIVE).FromRgb(rgb);
  // Channels stay equal (gray), the mean brightness is preserved, every output lies within
  // the range of its 2x2 source neighbourhood (bilinear never overshoots).
  double in_mean = cv::mean(gray)[0], out_sum = 0;
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 64; ++x) {
      const float l = Level(t, 0, y, x, mean, std);
      EXPECT_FLOAT_EQ(At(t, 0, y, x), At(t, 2, y, x));
      out_sum += l;
      const double sx = std::clamp((x + 0.5) * 28 / 64 - 0.5, 0.0, 27.0);
      const double sy = std::clamp((y + 0.5) * 28 / 64 - 0.5, 0.0, 27.0);
      const int x0 = static_cast<int>(sx), y0 = static_cast<int>(sy);
      const int x1 = std::min(x0 + 1, 27), y1 = std::min(y0 + 1, 27);
      const int lo = std::min({gray.at<uint8_t>(y0, x0), gray.at<uint8_t>(y0, x1), gray.at<uint8_t>(y1, x0), gray.at<uint8_t>(y1, x1)});
      const int hi = std::max({gray.at<uint8_t>(y0, x0), gray.at<uint8_t>(y0, x1), gray.at<uint8_t>(y1, x0), gray.at<uint8_t>(y1, x1)});
      EXPECT_GE(l, lo - 0.01);
      EXPECT_LE(l, hi + 0.01);
    }
  EXPECT_NEAR(out_sum / (64 * 64), in_mean, 2.0);
}

TEST(ImagePreprocessor, CustomSizeMeanStd) {
  config::ImagePreprocess cfg;
  cfg.set_recipe(config::ImagePreprocess::NATIVE);
  cfg.set_size(32);
  for (float m : {0.1f, 0.2f, 0.3f}) cfg.add_mean(m);
  for (float s : {0.5f, 1.0f, 2.0f}) cfg.add_std(s);
  auto p = ImagePreprocessor::Create(cfg);
  ASSERT_TRUE(p.ok()) << p.status();
  const ImageTensor t = p->FromRgb(cv::Mat(10, 10, CV_8UC3, cv::Scalar(51, 102, 255)));
  EXPECT_EQ(t.width, 32);
  EXPECT_FLOAT_EQ(At(t, 0, 3, 3), (0.2f - 0.1f) / 0.5f);
  EXPECT_FLOAT_EQ(At(t, 1, 3, 3), (0.4f - 0.2f) / 1.0f);
  EXPECT_FLOAT_EQ(At(t, 2, 3, 3), (1.0f - 0.3f) / 2.0f);
}

TEST(ImagePreprocessor, ConfigErrorsNameTheField) {
  auto err = [](auto&& edit) {
    config::ImagePreprocess cfg;
    cfg.set_recipe(config::ImagePreprocess::CLIP);
    edit(cfg);
    return std::string(ImagePreprocessor::Create(cfg).status().message());
  };
  EXPECT_EQ(err([](auto& c) { c.set_size(4); }),
            "image.size must be 0 (recipe default) or in [8, 1024], got 4");
  EXPECT_EQ(err([](auto& c) { c.set_size(5000); }),
            "image.size must be 0 (recipe default) or in [8, 1024], got 5000");
  EXPECT_EQ(err([](auto& c) { c.add_mean(0.5f); c.add_mean(0.5f); }),
            "image.mean must have 3 values (R, G, B) or none, got 2");
  EXPECT_EQ(err([](auto& c) { c.add_std(0.5f); c.add_std(0.f); c.add_std(0.5f); }),
            "image.std[1] must be > 0, got 0");
  EXPECT_EQ(err([](auto& c) { c.add_std(0.5f); c.add_std(0.5f); c.add_std(-1.f); }),
            "image.std[2] must be > 0, got -1");
  EXPECT_EQ(err([](auto& c) { c.add_mean(NAN); c.add_mean(0.5f); c.add_mean(0.5f); }),
            "image.mean[0] must be finite, got nan");
  EXPECT_EQ(err([](auto& c) { c.set_recipe(static_cast<config::ImagePreprocess::Recipe>(9)); }),
            "image.recipe: unknown recipe value 9");
  config::ImagePreprocess unspecified;
  auto p = ImagePreprocessor::Create(unspecified);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->recipe(), config::ImagePreprocess::NATIVE);
}

TEST(ImagePreprocessor, FromEncodedAppliesLimitsAndDecodes) {
  config::ImagePreprocess cfg;
  cfg.set_recipe(config::ImagePreprocess::NATIVE);
  ImageLimits limits;
  limits.max_pixels = 1000;
  auto p = ImagePreprocessor::Create(cfg, limits);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->limits().max_pixels, 1000);
  const cv::Mat rgb = RandomRgb(30, 30, 3);
  auto ok = p->FromEncoded(EncodePng(rgb));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->width, 64);
  EXPECT_EQ(p->FromEncoded(EncodePng(RandomRgb(40, 30, 3))).status().message(),
            "image is 40x30 = 1200 pixels, over the limit of 1000");
  EXPECT_EQ(p->FromEncoded("").status().message(), "image is empty (0 bytes)");
}

TEST(ImagePreprocessor, NonRgb8InputIsConverted) {
  const ImagePreprocessor p = Make(config::ImagePreprocess::NATIVE);
  cv::Mat gray(64, 64, CV_8UC1, cv::Scalar(200));
  const ImageTensor t = p.FromRgb(gray);
  for (int c = 0; c < 3; ++c) EXPECT_FLOAT_EQ(At(t, c, 3, 3), (200 / 255.0f - 0.5f) / 0.5f);
  cv::Mat rgba(64, 64, CV_8UC4, cv::Scalar(200, 100, 0, 0));  // fully transparent -> black
  EXPECT_FLOAT_EQ(At(p.FromRgb(rgba), 0, 1, 1), -1.0f);
  // Odd inputs never throw: empty -> one black pixel, float RGB in [0, 1], signed -> black.
  EXPECT_FLOAT_EQ(At(p.FromRgb(cv::Mat()), 0, 0, 0), -1.0f);
  const ImageTensor f = p.FromRgb(cv::Mat(8, 8, CV_64FC3, cv::Scalar(1.0, 0.0, 0.5)));
  EXPECT_FLOAT_EQ(At(f, 0, 2, 2), 1.0f);
  EXPECT_FLOAT_EQ(At(f, 1, 2, 2), -1.0f);
  EXPECT_FLOAT_EQ(At(f, 2, 2, 2), (128 / 255.0f - 0.5f) / 0.5f);
  EXPECT_FLOAT_EQ(At(p.FromRgb(cv::Mat(8, 8, CV_8SC3, cv::Scalar(5, 5, 5))), 0, 0, 0), -1.0f);
}

TEST(ImagePreprocessor, ConcurrentUseGivesIdenticalResults) {
  const ImagePreprocessor p = Make(config::ImagePreprocess::CLIP);
  const cv::Mat rgb = SmoothRgb(400, 300);
  const ImageTensor expected = p.FromRgb(rgb);
  std::vector<std::thread> threads;
  std::vector<int> same(4, 0);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      ImagePreprocessor copy = p;  // copyable
      same[i] = copy.FromRgb(rgb).data == expected.data && p.FromRgb(rgb).data == expected.data;
    });
  }
  for (auto& t : threads) t.join();
  for (int s : same) EXPECT_EQ(s, 1);
}

}  // namespace
}  // namespace eqsim
