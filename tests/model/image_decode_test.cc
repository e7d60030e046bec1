// DecodeImageRgb / ReadImageHeader / EncodePng on fixtures written at test time.
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/data/fashion_mnist.h"
#include "model/image/preprocess.h"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"
#include "tests/model/gif_writer.h"
#include "tests/model/png_writer.h"

namespace eqsim {
namespace {

using ::eqsim::testing::MakePng;
using ::eqsim::testing::PngChunk;
using ::eqsim::testing::PngIhdr;
using ::eqsim::testing::PngSignature;
using ::testing::HasSubstr;

cv::Mat RandomRgb(int w, int h, uint32_t seed) {
  cv::Mat m(h, w, CV_8UC3);
  std::mt19937 rng(seed);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) m.at<cv::Vec3b>(y, x)[c] = static_cast<uint8_t>(rng() & 0xff);
  return m;
}

// A smooth image (lossy codecs keep it close).
cv::Mat GradientRgb(int w, int h) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      m.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(x * 255 / (w - 1)),
                                        static_cast<uint8_t>(y * 255 / (h - 1)), 128);
  return m;
}

std::string Encode(const std::string& ext, const cv::Mat& bgr_or_gray, std::vector<int> params = {}) {
  std::vector<uchar> buf;
  EXPECT_TRUE(cv::imencode(ext, bgr_or_gray, buf, params)) << ext;
  return std::string(buf.begin(), buf.end());
}

cv::Mat ToBgr(const cv::Mat& rgb) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  return bgr;
}

double MeanAbsDiff(const cv::Mat& a, const cv::Mat& b) {
  cv::Mat d;
  cv::absdiff(a, b, d);
  const cv::Scalar s = cv::mean(d);
  return (s[0] + s[1] + s[2]) / 3.0;
}

bool Identical(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

TEST(DecodeImageRgb, LosslessFormatsRoundTripExactly) {
  const cv::Mat rgb = RandomRgb(37, 23, 1);
  struct Case {
    std::string ext, format;
    std::vector<int> params;
  };
  for (const Case& c : std::vector<Case>{{".png", "PNG", {}},
                                         {".bmp", "BMP", {}},
                                         {".tiff", "TIFF", {}},
                                         {".ppm", "PNM", {}},
                                         {".webp", "WebP", {cv::IMWRITE_WEBP_QUALITY, 101}}}) {
    SCOPED_TRACE(c.ext);
    const std::string bytes = Encode(c.ext, ToBgr(rgb), c.params);
    auto header = ReadImageHeader(bytes);
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->format, c.format);
    EXPECT_EQ(header->width, 37);
    EXPECT_EQ(header->height, 23);
    auto decoded = DecodeImageRgb(bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->type(), CV_8UC3);
    EXPECT_TRUE(Identical(*decoded, rgb));
  }
}

TEST(DecodeImageRgb, LossyFormatsStayClose) {
  const cv::Mat rgb = GradientRgb(64, 48);
  for (const std::string ext : {".jpg", ".webp"}) {
    SCOPED_TRACE(ext);
    const std::string bytes = Encode(ext, ToBgr(rgb), {ext == ".jpg" ? cv::IMWRITE_JPEG_QUALITY : cv::IMWRITE_WEBP_QUALITY, 95});
    auto header = ReadImageHeader(bytes);
    ASSERT_TRUE(header.ok()) << header.status();
    EXPECT_EQ(header->format, ext == ".jpg" ? "JPEG" : "WebP");
    EXPECT_EQ(header->width, 64);
    EXPECT_EQ(header->height, 48);
    auto decoded = DecodeImageRgb(bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_LT(MeanAbsDiff(*decoded, rgb), 3.0);
    // Channel order: red grows with x, green with y.
    EXPECT_GT((*decoded).at<cv::Vec3b>(0, 63)[0], 240);
    EXPECT_LT((*decoded).at<cv::Vec3b>(0, 63)[1], 15);
  }
}

TEST(DecodeImageRgb, ProgressiveJpegHeader) {
  const std::string bytes = Encode(".jpg", ToBgr(GradientRgb(50, 30)), {cv::IMWRITE_JPEG_PROGRESSIVE, 1});
  auto header = ReadImageHeader(bytes);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->width, 50);
  EXPECT_EQ(header->height, 30);
  EXPECT_TRUE(DecodeImageRgb(bytes).ok());
}

TEST(DecodeImageRgb, GrayscaleIsReplicated) {
  cv::Mat gray(5, 7, CV_8UC1);
  for (int i = 0; i < 35; ++i) gray.data[i] = static_cast<uint8_t>(i * 7);
  for (const std::string ext : {".png", ".bmp", ".pgm", ".tiff"}) {
    SCOPED_TRACE(ext);
    auto decoded = DecodeImageRgb(Encode(ext, gray));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    ASSERT_EQ(decoded->type(), CV_8UC3);
    for (int y = 0; y < 5; ++y)
      for (int x = 0; x < 7; ++x)
        EXPECT_EQ(decoded->at<cv::Vec3b>(y, x), cv::Vec3b::all(gray.at<uint8_t>(y, x)));
  }
}

TEST(DecodeImageRgb, RealFashionMnistPixelsSurvivePng) {
  auto data = LoadFashionMnist(FashionMnistSplit::kTest);
  ASSERT_TRUE(data.ok()) << data.status();
  for (int64_t i : {0, 1, 9999}) {
    const cv::Mat gray(28, 28, CV_8UC1, const_cast<uint8_t*>(data->image(i)));
    auto decoded = DecodeImageRgb(Encode(".png", gray));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    cv::Mat channels[3];
    cv::split(*decoded, channels);
    for (const cv::Mat& c : channels) EXPECT_EQ(cv::norm(c, gray, cv::NORM_INF), 0) << "image " << i;
    EXPECT_GT(cv::countNonZero(gray), 50);  // a real garment, not a blank
  }
}

TEST(DecodeImageRgb, SixteenBitIsScaledTo8Bit) {
  // OpenCV-written 16-bit PNG: v16 = v8 * 257 must decode to v8 exactly.
  const cv::Mat rgb = RandomRgb(9, 4, 2);
  cv::Mat bgr16;
  ToBgr(rgb).convertTo(bgr16, CV_16UC3, 257.0);
  auto decoded = DecodeImageRgb(Encode(".png", bgr16));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(Identical(*decoded, rgb));
  // Hand-made 16-bit grayscale: 1000 -> round(1000 * 255 / 65535) = 4; 65535 -> 255; 32896 -> 128.
  std::string row = {0x03, static_cast<char>(0xE8), static_cast<char>(0xFF), static_cast<char>(0xFF),
                     static_cast<char>(0x80), static_cast<char>(0x80)};
  auto gray = DecodeImageRgb(MakePng(3, 1, 16, 0, {row}));
  ASSERT_TRUE(gray.ok()) << gray.status();
  EXPECT_EQ(gray->at<cv::Vec3b>(0, 0), cv::Vec3b::all(4));
  EXPECT_EQ(gray->at<cv::Vec3b>(0, 1), cv::Vec3b::all(255));
  EXPECT_EQ(gray->at<cv::Vec3b>(0, 2), cv::Vec3b::all(128));
}

TEST(DecodeImageRgb, AlphaIsCompositedOverBlack) {
  cv::Mat bgra(1, 3, CV_8UC4);
  bgra.at<cv::Vec4b>(0, 0) = {10, 100, 200, 0};    // fully transparent
  bgra.at<cv::Vec4b>(0, 1) = {10, 100, 200, 255};  // opaque
  bgra.at<cv::Vec4b>(0, 2) = {10, 100, 200, 128};  // half
  auto decoded = DecodeImageRgb(Encode(".png", bgra));
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 0));
  EXPECT_EQ(decoded->at<cv::Vec3b>(0, 1), cv::Vec3b(200, 100, 10));
  // round(200 * 128 / 255) = 100, round(100 * 128 / 255) = 50, round(10 * 128 / 255) = 5
  EXPECT_EQ(decoded->at<cv::Vec3b>(0, 2), cv::Vec3b(100, 50, 5));
}

TEST(DecodeImageRgb, HandWrittenPaletteGrayAlphaAnd16BitRgba) {
  // Palette (colour type 3) with a tRNS entry making index 2 half transparent.
  const std::string plte = {static_cast<char>(255), 0, 0, 0, static_cast<char>(255), 0, 0, 0,
                            static_cast<char>(200)};
  const std::string trns = {static_cast<char>(255), static_cast<char>(255), static_cast<char>(102)};
  auto pal = DecodeImageRgb(MakePng(3, 2, 8, 3, {std::string{0, 1, 2}, std::string{2, 1, 0}}, plte, trns));
  ASSERT_TRUE(pal.ok()) << pal.status();
  EXPECT_EQ(pal->at<cv::Vec3b>(0, 0), cv::Vec3b(255, 0, 0));
  EXPECT_EQ(pal->at<cv::Vec3b>(0, 1), cv::Vec3b(0, 255, 0));
  EXPECT_EQ(pal->at<cv::Vec3b>(0, 2), cv::Vec3b(0, 0, 80));  // 200 * 102 / 255 = 80
  EXPECT_EQ(pal->at<cv::Vec3b>(1, 0), cv::Vec3b(0, 0, 80));
  // Palette without transparency, 4-bit indices: two pixels per byte.
  auto pal4 = DecodeImageRgb(MakePng(2, 1, 4, 3, {std::string{0x21}}, plte));
  ASSERT_TRUE(pal4.ok()) << pal4.status();
  EXPECT_EQ(pal4->at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 200));
  EXPECT_EQ(pal4->at<cv::Vec3b>(0, 1), cv::Vec3b(0, 255, 0));
  // Gray + alpha (colour type 4): (gray 200, alpha 51) -> 40; (gray 90, alpha 255) -> 90.
  auto ga = DecodeImageRgb(MakePng(2, 1, 8, 4, {std::string{static_cast<char>(200), 51, 90,
                                                           static_cast<char>(255)}}));
  ASSERT_TRUE(ga.ok()) << ga.status();
  EXPECT_EQ(ga->at<cv::Vec3b>(0, 0), cv::Vec3b::all(40));
  EXPECT_EQ(ga->at<cv::Vec3b>(0, 1), cv::Vec3b::all(90));
  // 16-bit RGBA (colour type 6): R=65535 G=0 B=32896, A=32896 (~0.502) -> (128, 0, 64).
  const std::string px = {static_cast<char>(0xFF), static_cast<char>(0xFF), 0, 0,
                          static_cast<char>(0x80), static_cast<char>(0x80), static_cast<char>(0x80),
                          static_cast<char>(0x80)};
  auto rgba16 = DecodeImageRgb(MakePng(1, 1, 16, 6, {px}));
  ASSERT_TRUE(rgba16.ok()) << rgba16.status();
  EXPECT_EQ(rgba16->at<cv::Vec3b>(0, 0), cv::Vec3b(128, 0, 64));
}

std::string Palette(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string t;
  for (int i = 0; i < n * 3; ++i) t.push_back(static_cast<char>(rng() & 0xff));
  return t;
}

cv::Vec3b PaletteRgb(const std::string& t, int i) {
  return cv::Vec3b(static_cast<uint8_t>(t[i * 3]), static_cast<uint8_t>(t[i * 3 + 1]),
                   static_cast<uint8_t>(t[i * 3 + 2]));
}

TEST(DecodeGif, FirstFrameExactly) {
  using ::eqsim::testing::GifFrame;
  using ::eqsim::testing::MakeGif;
  std::mt19937 rng(8);
  for (int colours : {4, 16, 256}) {
    for (bool compress : {true, false}) {
      for (bool interlaced : {false, true}) {
        SCOPED_TRACE(::testing::Message() << colours << " colours, compress " << compress << ", interlaced " << interlaced);
        const std::string table = Palette(colours, colours);
        GifFrame f;
        f.width = 97;
        f.height = 61;
        // Runs of repeated indices (so LZW builds long strings and reaches 12-bit codes).
        for (int i = 0; i < f.width * f.height; ++i)
          f.indices.push_back(static_cast<uint8_t>((i / (1 + rng() % 7) + rng() % 2) % colours));
        f.interlaced = interlaced;
        const std::string gif = MakeGif(97, 61, table, 0, f, compress);
        auto h = ReadImageHeader(gif);
        ASSERT_TRUE(h.ok()) << h.status();
        EXPECT_EQ(h->format, "GIF");
        EXPECT_EQ(h->width, 97);
        auto rgb = DecodeImageRgb(gif);
        ASSERT_TRUE(rgb.ok()) << rgb.status();
        int wrong = 0;
        for (int y = 0; y < 61; ++y)
          for (int x = 0; x < 97; ++x)
            wrong += rgb->at<cv::Vec3b>(y, x) != PaletteRgb(table, f.indices[y * 97 + x]);
        EXPECT_EQ(wrong, 0);
      }
    }
  }
}

TEST(DecodeGif, TransparencyOffsetsAndLocalTables) {
  using ::eqsim::testing::GifFrame;
  using ::eqsim::testing::MakeGif;
  const std::string global = Palette(4, 1), local = Palette(8, 2);
  GifFrame f;
  f.left = 3;
  f.top = 2;
  f.width = 4;
  f.height = 3;
  f.indices = {0, 1, 2, 3, 4, 5, 6, 7, 7, 6, 5, 4};
  f.local_table = local;
  f.transparent = 5;
  auto rgb = DecodeImageRgb(MakeGif(10, 6, global, 2, f));
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  EXPECT_EQ(rgb->at<cv::Vec3b>(0, 0), PaletteRgb(global, 2));  // background colour
  EXPECT_EQ(rgb->at<cv::Vec3b>(2, 3), PaletteRgb(local, 0));   // frame origin
  EXPECT_EQ(rgb->at<cv::Vec3b>(3, 4), cv::Vec3b(0, 0, 0));     // index 5: transparent
  EXPECT_EQ(rgb->at<cv::Vec3b>(4, 6), PaletteRgb(local, 4));
  EXPECT_EQ(rgb->at<cv::Vec3b>(5, 9), PaletteRgb(global, 2));
}

TEST(DecodeGif, Errors) {
  using ::eqsim::testing::GifFrame;
  using ::eqsim::testing::MakeGif;
  GifFrame f;
  f.width = 20;
  f.height = 20;
  f.indices.assign(400, 1);
  const std::string gif = MakeGif(20, 20, Palette(4, 3), 0, f);
  const std::string cut = gif.substr(0, gif.size() - 12);
  EXPECT_THAT(std::string(DecodeImageRgb(cut).status().message()), HasSubstr("GIF"));
  EXPECT_EQ(DecodeImageRgb(cut).status().code(), absl::StatusCode::kInvalidArgument);
  // A screen of 60000 x 60000 is refused from the 13-byte header alone.
  std::string huge("GIF89a\x60\xea\x60\xea\x00\x00\x00", 13);
  EXPECT_EQ(DecodeImageRgb(huge).status().message(),
            "image is 60000x60000 = 3600000000 pixels, over the limit of 40000000");
  EXPECT_EQ(DecodeImageRgb(std::string("GIF89a\x01\x00\x01\x00\x00\x00\x00\x3b", 14)).status().message(),
            "malformed GIF: the file has no image");
  // A data stream whose first code after the clear code is not a colour index: the image
  // descriptor follows the comment extension; its LZW data starts 12 bytes further (10 of
  // descriptor, the minimum code size 2, the sub-block length). 0xfc = codes 4 (clear), 7.
  std::string bad = gif;
  const size_t descriptor = bad.find(std::string("hello\0", 6)) + 6;
  ASSERT_EQ(bad[descriptor], 0x2C);
  ASSERT_EQ(bad[descriptor + 10], 2);
  bad[descriptor + 12] = static_cast<char>(0xfc);
  auto s = DecodeImageRgb(bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("malformed GIF"));
}

TEST(DecodeImageRgb, WebpChunkKinds) {
  cv::Mat bgra(20, 30, CV_8UC4, cv::Scalar(10, 20, 30, 255));
  const std::string lossless = Encode(".webp", ToBgr(GradientRgb(30, 20)), {cv::IMWRITE_WEBP_QUALITY, 101});
  const std::string lossy = Encode(".webp", ToBgr(GradientRgb(30, 20)), {cv::IMWRITE_WEBP_QUALITY, 80});
  const std::string alpha = Encode(".webp", bgra, {cv::IMWRITE_WEBP_QUALITY, 80});
  EXPECT_EQ(lossless.substr(12, 4), "VP8L");
  EXPECT_EQ(lossy.substr(12, 4), "VP8 ");
  for (const std::string* b : {&lossless, &lossy, &alpha}) {
    auto h = ReadImageHeader(*b);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(h->width, 30);
    EXPECT_EQ(h->height, 20);
    EXPECT_TRUE(DecodeImageRgb(*b).ok());
  }
  // A hand-written VP8X header (extended format) claiming 16384 x 16384.
  std::string vp8x = "RIFF";
  vp8x += std::string("\x16\x00\x00\x00", 4) + "WEBP" + "VP8X" + std::string("\x0a\x00\x00\x00", 4);
  vp8x += std::string("\x10\x00\x00\x00", 4);  // flags + reserved
  vp8x += std::string("\xff\x3f\x00\xff\x3f\x00", 6);
  vp8x += "VP8L" + std::string(4, '\0');  // the next chunk's header
  EXPECT_EQ(ReadImageHeader(vp8x.substr(0, 31)).status().message(),
            "image is truncated (WebP, 31 bytes, header needs 32)");
  auto h = ReadImageHeader(vp8x);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->width, 16384);
  EXPECT_EQ(h->height, 16384);
  EXPECT_EQ(DecodeImageRgb(vp8x).status().message(),
            "image is 16384x16384 = 268435456 pixels, over the limit of 40000000");
}

TEST(DecodeImageRgb, ExactErrorMessages) {
  EXPECT_EQ(DecodeImageRgb("").status().message(), "image is empty (0 bytes)");
  EXPECT_EQ(DecodeImageRgb("<html><body>").status().message(),
            "not a recognised image format (first bytes: 3c 68 74 6d)");
  EXPECT_EQ(DecodeImageRgb("BMW 320d for sale, one owner").status().message(),
            "not a recognised image format (first bytes: 42 4d 57 20)");
  EXPECT_EQ(DecodeImageRgb("P5-type engine").status().message(),
            "not a recognised image format (first bytes: 50 35 2d 74)");
  const std::string png = Encode(".png", ToBgr(RandomRgb(64, 64, 3)));
  EXPECT_EQ(DecodeImageRgb(png.substr(0, 20)).status().message(),
            "image is truncated (PNG, 20 bytes, header needs 33)");
  ImageLimits small;
  small.max_encoded_bytes = 100;
  EXPECT_EQ(DecodeImageRgb(png, small).status().message(),
            absl::StrCat("encoded image is ", png.size(), " bytes, over the limit of 100"));
  ImageLimits few_pixels;
  few_pixels.max_pixels = 4000;
  EXPECT_EQ(DecodeImageRgb(png, few_pixels).status().message(),
            "image is 64x64 = 4096 pixels, over the limit of 4000");
  // Header intact, pixel data cut: the decoder itself fails, reported with the header facts.
  const std::string cut = png.substr(0, png.size() / 2);
  auto s = DecodeImageRgb(cut).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), absl::StrCat("image could not be decoded (PNG 64x64, ", cut.size(),
                                      " bytes): corrupt or truncated data"));
  EXPECT_THAT(std::string(DecodeImageRgb(std::string("\0\0\0\x0cjP  \r\n", 10)).status().message()),
              HasSubstr("unsupported image format JPEG 2000"));
  EXPECT_THAT(std::string(DecodeImageRgb(std::string("\xff\xd8\xff\xe0\x00\x10JFIF", 10)).status().message()),
              HasSubstr("image is truncated (JPEG"));
}

TEST(DecodeImageRgb, HugeHeadersFailBeforeAnyDecoding) {
  // PNG: a valid IHDR claiming 100000 x 100000 and nothing else. Fails on the pixel limit,
  // not on the missing data: the check happens before decoding.
  const std::string png = PngSignature() + PngIhdr(100000, 100000, 8, 2);
  EXPECT_EQ(DecodeImageRgb(png).status().message(),
            "image is 100000x100000 = 10000000000 pixels, over the limit of 40000000");
  // JPEG: SOI, an APP0 segment to skip, then SOF0 claiming 60000 x 50000.
  std::string jpg("\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xc0\x00\x11\x08\xc3\x50\xea\x60\x03", 18);
  EXPECT_EQ(DecodeImageRgb(jpg).status().message(),
            "image is 60000x50000 = 3000000000 pixels, over the limit of 40000000");
  // BMP: BITMAPINFOHEADER with 100000 x -100000 (top-down).
  std::string bmp = "BM" + std::string(12, '\0');
  bmp += std::string("\x28\x00\x00\x00", 4) + std::string("\xa0\x86\x01\x00", 4) +
         std::string("\x60\x79\xfe\xff", 4);
  EXPECT_EQ(DecodeImageRgb(bmp).status().message(),
            "image is 100000x100000 = 10000000000 pixels, over the limit of 40000000");
  // 32-bit dimensions at their maximum: the product needs all 64 bits.
  EXPECT_EQ(DecodeImageRgb(PngSignature() + PngIhdr(0xFFFFFFFF, 0xFFFFFFFF, 8, 2)).status().message(),
            "image is 4294967295x4294967295 = 18446744065119617025 pixels, over the limit of 40000000");
  // Zero width.
  EXPECT_THAT(std::string(DecodeImageRgb(PngSignature() + PngIhdr(0, 5, 8, 2)).status().message()),
              HasSubstr("zero width or height"));
}

TEST(DecodeImageRgb, TruncatedJpegIsRejectedUnlessAllowed) {
  const std::string jpg = Encode(".jpg", ToBgr(GradientRgb(64, 48)), {cv::IMWRITE_JPEG_QUALITY, 90});
  const std::string cut = jpg.substr(0, jpg.size() * 2 / 3);
  EXPECT_EQ(DecodeImageRgb(cut).status().message(),
            absl::StrCat("image is truncated (JPEG, ", cut.size(), " bytes, no end-of-image marker)"));
  ImageLimits lenient;
  lenient.allow_truncated_jpeg = true;
  auto partial = DecodeImageRgb(cut, lenient);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ(partial->cols, 64);
  EXPECT_EQ(partial->rows, 48);
  // The top rows were in the data and decode as usual.
  EXPECT_GT(partial->at<cv::Vec3b>(0, 63)[0], 240);
  // Bytes after the end-of-image marker (common in the wild) are fine.
  auto trailing = DecodeImageRgb(jpg + "trailing junk");
  ASSERT_TRUE(trailing.ok()) << trailing.status();
}

TEST(DecodeImageRgb, ImagesAtTheLimitDecode) {
  ImageLimits exact;
  exact.max_pixels = 64 * 64;
  const std::string png = Encode(".png", ToBgr(RandomRgb(64, 64, 4)));
  exact.max_encoded_bytes = static_cast<int64_t>(png.size());
  EXPECT_TRUE(DecodeImageRgb(png, exact).ok());
}

std::string GifSeed() {
  ::eqsim::testing::GifFrame f;
  f.width = 32;
  f.height = 24;
  for (int i = 0; i < 32 * 24; ++i) f.indices.push_back(static_cast<uint8_t>((i / 5) % 16));
  f.transparent = 3;
  return ::eqsim::testing::MakeGif(32, 24, Palette(16, 4), 1, f);
}

// Corrupted inputs (random byte flips and cuts of every supported format) must come back as
// an error or a correctly sized image, never crash or exceed the limits.
TEST(DecodeImageRgb, SurvivesCorruptedInputs) {
  const cv::Mat bgr = ToBgr(GradientRgb(32, 24));
  cv::Mat bgra;
  cv::cvtColor(bgr, bgra, cv::COLOR_BGR2BGRA);
  const std::vector<std::string> seeds = {
      Encode(".png", bgr), Encode(".png", bgra), Encode(".jpg", bgr),
      Encode(".jpg", bgr, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}), Encode(".bmp", bgr),
      Encode(".tiff", bgr), Encode(".ppm", bgr), Encode(".webp", bgr, {cv::IMWRITE_WEBP_QUALITY, 101}),
      Encode(".webp", bgra, {cv::IMWRITE_WEBP_QUALITY, 70}), GifSeed()};
  std::mt19937 rng(12345);
  ImageLimits limits;
  limits.max_pixels = 1 << 20;
  int ok = 0, errors = 0;
  for (const std::string& seed : seeds) {
    for (int trial = 0; trial < 150; ++trial) {
      std::string b = seed;
      const int kind = trial % 3;
      if (kind == 0 || kind == 2) {  // flip 1..4 bytes (kind 2: inside the first 64 bytes)
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) {
          const size_t range = kind == 2 ? std::min<size_t>(64, b.size()) : b.size();
          b[rng() % range] = static_cast<char>(rng() & 0xff);
        }
      }
      if (kind == 1) b.resize(rng() % b.size());  // cut anywhere
      auto r = DecodeImageRgb(b, limits);
      if (r.ok()) {
        ++ok;
        EXPECT_EQ(r->type(), CV_8UC3);
        EXPECT_LE(static_cast<int64_t>(r->total()), limits.max_pixels);
        auto h = ReadImageHeader(b);
        ASSERT_TRUE(h.ok());
        EXPECT_EQ(r->cols, h->width);
        EXPECT_EQ(r->rows, h->height);
      } else {
        ++errors;
        EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
        EXPECT_FALSE(r.status().message().empty());
      }
    }
  }
  EXPECT_GT(errors, 100);  // the corruption is real
  EXPECT_GT(ok, 50);       // and flips in pixel data often still decode
}

TEST(EncodePng, RoundTripsLosslessly) {
  const cv::Mat rgb = RandomRgb(31, 17, 5);
  const std::string png = EncodePng(rgb);
  ASSERT_FALSE(png.empty());
  EXPECT_EQ(SniffImageFormat(png), "PNG");
  auto back = DecodeImageRgb(png);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(Identical(*back, rgb));
  EXPECT_EQ(EncodePng(cv::Mat()), "");
  EXPECT_EQ(EncodePng(cv::Mat(2, 2, CV_32FC3)), "");
}

}  // namespace
}  // namespace eqsim
