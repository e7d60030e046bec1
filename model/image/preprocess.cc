#include "model/image/preprocess.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/core/status_macros.h"
#include "model/image/gif.h"
#include "model/image/npy.h"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"

namespace eqsim {
namespace {

uint32_t Be16(std::string_view b, size_t o) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(b[o])) << 8) |
         static_cast<unsigned char>(b[o + 1]);
}
uint32_t Be32(std::string_view b, size_t o) { return (Be16(b, o) << 16) | Be16(b, o + 2); }
uint32_t Le16(std::string_view b, size_t o) {
  return static_cast<unsigned char>(b[o]) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[o + 1])) << 8);
}
uint32_t Le24(std::string_view b, size_t o) {
  return Le16(b, o) | (static_cast<uint32_t>(static_cast<unsigned char>(b[o + 2])) << 16);
}
uint32_t Le32(std::string_view b, size_t o) { return Le16(b, o) | (Le16(b, o + 2) << 16); }

std::string HexPrefix(std::string_view bytes, size_t n) {
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < n; ++i) {
    if (i) out += ' ';
    absl::StrAppendFormat(&out, "%02x", static_cast<unsigned char>(bytes[i]));
  }
  return out;
}

absl::Status Truncated(std::string_view format, size_t have, size_t need) {
  return absl::InvalidArgumentError(absl::StrCat("image is truncated (", std::string(format), ", ", have,
                                                 " bytes, header needs ", need, ")"));
}
absl::Status Malformed(std::string_view format, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed ", std::string(format), " header: ", std::string(what)));
}

absl::StatusOr<ImageHeader> PngHeader(std::string_view b) {
  // 8-byte signature, then the IHDR chunk: length 13, "IHDR", width, height, 5 bytes, CRC.
  if (b.size() < 33) return Truncated("PNG", b.size(), 33);
  if (b.substr(12, 4) != "IHDR") return Malformed("PNG", "the first chunk is not IHDR");
  if (Be32(b, 8) != 13) return Malformed("PNG", absl::StrCat("IHDR length is ", Be32(b, 8), ", not 13"));
  return ImageHeader{"PNG", Be32(b, 16), Be32(b, 20)};
}

bool IsJpegSof(unsigned m) {
  return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

absl::StatusOr<ImageHeader> JpegHeader(std::string_view b) {
  size_t p = 2;  // after SOI
  while (true) {
    // Markers start with 0xFF, possibly padded with more 0xFF fill bytes.
    if (p >= b.size()) return Truncated("JPEG", b.size(), p + 1);
    if (static_cast<unsigned char>(b[p]) != 0xFF) {
      return Malformed("JPEG", absl::StrCat("expected a marker at offset ", p));
    }
    while (p < b.size() && static_cast<unsigned char>(b[p]) == 0xFF) ++p;
    if (p >= b.size()) return Truncated("JPEG", b.size(), p + 1);
    const unsigned m = static_cast<unsigned char>(b[p++]);
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // standalone markers
    if (m == 0xD9 || m == 0xDA) {
      return Malformed("JPEG", m == 0xD9 ? "end of image before any frame header (SOF)"
                                         : "scan data before any frame header (SOF)");
    }
    if (p + 2 > b.size()) return Truncated("JPEG", b.size(), p + 2);
    const size_t len = Be16(b, p);
    if (len < 2) return Malformed("JPEG", absl::StrCat("segment length ", len, " at offset ", p));
    if (IsJpegSof(m)) {
      // length(2) precision(1) height(2) width(2)
      if (p + 7 > b.size()) return Truncated("JPEG", b.size(), p + 7);
      const uint32_t h = Be16(b, p + 3);
      const uint32_t w = Be16(b, p + 5);
      if (h == 0) return Malformed("JPEG", "height 0 (defined by a DNL marker) is not supported");
      return ImageHeader{"JPEG", w, h};
    }
    p += len;
  }
}

// True when a JPEG's end-of-image marker (FF D9) follows its first scan. Inside entropy-coded
// data FF is always followed by 00 or a restart marker, so FF D9 there is the real end (an
// EXIF thumbnail's own EOI comes before the main image's first scan and is skipped).
bool JpegHasEoi(std::string_view b) {
  size_t p = 2;
  while (p + 4 <= b.size()) {
    if (static_cast<unsigned char>(b[p]) != 0xFF) return false;
    while (p < b.size() && static_cast<unsigned char>(b[p]) == 0xFF) ++p;
    if (p >= b.size()) return false;
    const unsigned m = static_cast<unsigned char>(b[p++]);
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;
    if (m == 0xD9) return true;
    if (p + 2 > b.size()) return false;
    const size_t len = Be16(b, p);
    if (m == 0xDA) return b.find("\xff\xd9", p + len) != std::string_view::npos;
    p += len;
  }
  return false;
}

absl::StatusOr<ImageHeader> BmpHeader(std::string_view b) {
  if (b.size() < 18) return Truncated("BMP", b.size(), 18);
  const uint32_t dib = Le32(b, 14);
  if (dib == 12) {  // BITMAPCOREHEADER: 16-bit width and height
    if (b.size() < 26) return Truncated("BMP", b.size(), 26);
    return ImageHeader{"BMP", Le16(b, 18), Le16(b, 20)};
  }
  if (dib < 40) return Malformed("BMP", absl::StrCat("unknown info header size ", dib));
  if (b.size() < 26) return Truncated("BMP", b.size(), 26);
  const int32_t w = static_cast<int32_t>(Le32(b, 18));
  const int32_t h = static_cast<int32_t>(Le32(b, 22));  // negative = top-down
  if (w < 0) return Malformed("BMP", absl::StrCat("negative width ", w));
  if (b.size() >= 34) {  // what OpenCV's BMP reader accepts; checked here to fail cleanly
    const uint32_t bpp = Le16(b, 28), compression = Le32(b, 30);
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32) {
      return Malformed("BMP", absl::StrCat("unsupported bits per pixel ", bpp));
    }
    if (compression > 3) {
      return Malformed("BMP", absl::StrCat("unsupported compression ", compression,
                                           " (0 RGB, 1 RLE8, 2 RLE4, 3 BITFIELDS are)"));
    }
  }
  return ImageHeader{"BMP", w, std::abs(static_cast<int64_t>(h))};
}

absl::StatusOr<ImageHeader> WebpHeader(std::string_view b) {
  // 32 bytes: the smallest WebP libwebp / OpenCV will look at (RIFF header + chunk header +
  // the frame header); every chunk kind's dimensions lie inside it.
  if (b.size() < 32) return Truncated("WebP", b.size(), 32);
  const std::string_view chunk = b.substr(12, 4);
  if (chunk == "VP8 ") {
    if (b.size() < 30) return Truncated("WebP", b.size(), 30);
    if (static_cast<unsigned char>(b[23]) != 0x9d || static_cast<unsigned char>(b[24]) != 0x01 ||
        static_cast<unsigned char>(b[25]) != 0x2a) {
      return Malformed("WebP", "VP8 start code 9d 01 2a missing");
    }
    return ImageHeader{"WebP", Le16(b, 26) & 0x3fff, Le16(b, 28) & 0x3fff};
  }
  if (chunk == "VP8L") {
    if (b.size() < 25) return Truncated("WebP", b.size(), 25);
    if (static_cast<unsigned char>(b[20]) != 0x2f) return Malformed("WebP", "VP8L signature 2f missing");
    const uint32_t bits = Le32(b, 21);
    return ImageHeader{"WebP", (bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1};
  }
  if (chunk == "VP8X") {
    if (b.size() < 30) return Truncated("WebP", b.size(), 30);
    return ImageHeader{"WebP", static_cast<int64_t>(Le24(b, 24)) + 1,
                       static_cast<int64_t>(Le24(b, 27)) + 1};
  }
  return Malformed("WebP", absl::StrCat("unknown first chunk '", HexPrefix(chunk, 4), "'"));
}

absl::StatusOr<ImageHeader> TiffHeader(std::string_view b) {
  const bool le = b[0] == 'I';
  auto u16 = [&](size_t o) { return le ? Le16(b, o) : Be16(b, o); };
  auto u32 = [&](size_t o) { return le ? Le32(b, o) : Be32(b, o); };
  if (b.size() < 8) return Truncated("TIFF", b.size(), 8);
  const size_t ifd = u32(4);
  if (ifd + 2 > b.size()) return Truncated("TIFF", b.size(), ifd + 2);
  const size_t n = u16(ifd);
  int64_t w = -1, h = -1;
  for (size_t i = 0; i < n; ++i) {
    const size_t e = ifd + 2 + 12 * i;
    if (e + 12 > b.size()) return Truncated("TIFF", b.size(), e + 12);
    const uint32_t tag = u16(e), type = u16(e + 2);
    if (tag != 256 && tag != 257) continue;
    const int64_t v = type == 3 ? u16(e + 8) : type == 4 ? u32(e + 8) : -1;
    if (v < 0) return Malformed("TIFF", absl::StrCat("tag ", tag, " has type ", type));
    (tag == 256 ? w : h) = v;
  }
  if (w < 0 || h < 0) return Malformed("TIFF", "ImageWidth / ImageLength tags missing");
  return ImageHeader{"TIFF", w, h};
}

absl::StatusOr<ImageHeader> PnmHeader(std::string_view b) {
  // "P5 <ws> width <ws> height <ws> [maxval] <ws>", with '#' comments.
  size_t p = 2;
  int64_t v[2] = {0, 0};
  for (int k = 0; k < 2; ++k) {
    while (p < b.size() && (std::isspace(static_cast<unsigned char>(b[p])) || b[p] == '#')) {
      if (b[p] == '#') {
        while (p < b.size() && b[p] != '\n') ++p;
      } else {
        ++p;
      }
    }
    if (p >= b.size()) return Truncated("PNM", b.size(), p + 1);
    if (!std::isdigit(static_cast<unsigned char>(b[p]))) return Malformed("PNM", "expected a number");
    while (p < b.size() && std::isdigit(static_cast<unsigned char>(b[p]))) {
      if (v[k] > 1'000'000'000) return Malformed("PNM", "dimension too large");
      v[k] = v[k] * 10 + (b[p++] - '0');
    }
  }
  return ImageHeader{"PNM", v[0], v[1]};
}

inline uint8_t To8(double v) {  // v in [0, 1] (clamped), rounded to nearest
  return static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 1.0) * 255.0));
}

// 1/2/3/4-channel (gray, gray+alpha, BGR, BGRA) rows of type T -> RGB8, alpha over black.
template <typename T>
void ConvertRows(const cv::Mat& in, double scale, cv::Mat* out) {
  const int ch = in.channels();
  for (int y = 0; y < in.rows; ++y) {
    const T* p = in.ptr<T>(y);
    uint8_t* o = out->ptr<uint8_t>(y);
    for (int x = 0; x < in.cols; ++x, p += ch, o += 3) {
      double r, g, b, a = 1.0;
      if (ch <= 2) {
        r = g = b = p[0] * scale;
        if (ch == 2) a = p[1] * scale;
      } else {
        b = p[0] * scale;
        g = p[1] * scale;
        r = p[2] * scale;
        if (ch == 4) a = p[3] * scale;
      }
      a = std::clamp(a, 0.0, 1.0);
      o[0] = To8(r * a);
      o[1] = To8(g * a);
      o[2] = To8(b * a);
    }
  }
}

// Converts whatever imdecode returned (1/2/3/4 channels, 8/16-bit or float) to RGB CV_8UC3,
// compositing alpha over black.
absl::StatusOr<cv::Mat> ToRgb8(const cv::Mat& in) {
  const int ch = in.channels();
  if (ch != 1 && ch != 2 && ch != 3 && ch != 4) {
    return absl::InvalidArgumentError(absl::StrCat("image has ", ch, " channels"));
  }
  double max_value;
  switch (in.depth()) {
    case CV_8U: max_value = 255.0; break;
    case CV_16U: max_value = 65535.0; break;
    case CV_32F: case CV_64F: max_value = 1.0; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unsupported pixel depth (OpenCV depth ", in.depth(), ")"));
  }
  const bool has_alpha = ch == 2 || ch == 4;
  cv::Mat rgb;
  if (in.depth() == CV_8U && !has_alpha) {
    cv::cvtColor(in, rgb, ch == 1 ? cv::COLOR_GRAY2RGB : cv::COLOR_BGR2RGB);
    return rgb;
  }
  // General path, row by row (no full-size float copies: a 40 MP 16-bit RGBA PNG would need
  // gigabytes): scale to [0, 1], composite over black, round to 8 bits.
  rgb.create(in.rows, in.cols, CV_8UC3);
  switch (in.depth()) {
    case CV_8U: ConvertRows<uint8_t>(in, 1.0 / max_value, &rgb); break;
    case CV_16U: ConvertRows<uint16_t>(in, 1.0 / max_value, &rgb); break;
    case CV_32F: ConvertRows<float>(in, 1.0, &rgb); break;
    default: ConvertRows<double>(in, 1.0, &rgb); break;
  }
  return rgb;
}

// ---- PIL-compatible bicubic resampling (what torchvision's Resize does on PIL images) ----
// Separable, antialiased when shrinking (support scaled by the reduction), a = -0.5, with
// PIL's 8-bit fixed-point arithmetic: horizontal pass first, then vertical.
constexpr int kPrecisionBits = 32 - 8 - 2;

double BicubicFilter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // out_size * 2: xmin, count
  std::vector<int32_t> k;   // out_size * ksize, fixed point
};

// Coefficients of output pixels [first, first + count) of an in_size -> out_size resize.
// Each output pixel's taps depend only on its index, so a crop of the output can be computed
// without the rest (out_size may be huge for extreme aspect ratios: only the crop is built).
Coeffs PrecomputeCoeffs(int in_size, int64_t out_size, int first, int count) {
  Coeffs c;
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<size_t>(count) * 2);
  c.k.assign(static_cast<size_t>(count) * c.ksize, 0);
  std::vector<double> kk(c.ksize);
  for (int i = 0; i < count; ++i) {
    const double center = (static_cast<double>(first + i) + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = BicubicFilter((x + xmin - center + 0.5) * ss);
      kk[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? kk[x] / ww : kk[x];
      c.k[static_cast<size_t>(i) * c.ksize + x] =
          v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits))
                : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[i * 2] = xmin;
    c.bounds[i * 2 + 1] = xmax;
  }
  return c;
}

// Sums stay far inside int32 (|sum| <= 255 * 1.3 * 2^22 < 2^31), as in PIL.
inline uint8_t Clip8(int32_t in) {
  const int32_t v = in >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Rows [y0, y0 + rows) of src, horizontally resampled with `c` (one output column per
// coefficient set).
cv::Mat ResampleHorizontal(const cv::Mat& src, const Coeffs& c, int y0, int rows) {
  const int dst_w = static_cast<int>(c.bounds.size() / 2);
  cv::Mat dst(rows, dst_w, CV_8UC3);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* in = src.ptr<uint8_t>(y0 + y);
    uint8_t* out = dst.ptr<uint8_t>(y);
    for (int xx = 0; xx < dst_w; ++xx) {
      const int xmin = c.bounds[xx * 2], xmax = c.bounds[xx * 2 + 1];
      const int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int x = 0; x < xmax; ++x) {
        const uint8_t* px = in + (x + xmin) * 3;
        s0 += px[0] * k[x];
        s1 += px[1] * k[x];
        s2 += px[2] * k[x];
      }
      out[xx * 3] = Clip8(s0);
      out[xx * 3 + 1] = Clip8(s1);
      out[xx * 3 + 2] = Clip8(s2);
    }
  }
  return dst;
}

// Vertical pass; the coefficients' row bounds are relative to src row `row_shift`.
cv::Mat ResampleVertical(const cv::Mat& src, const Coeffs& c, int row_shift) {
  const int dst_h = static_cast<int>(c.bounds.size() / 2);
  cv::Mat dst(dst_h, src.cols, CV_8UC3);
  const int w3 = src.cols * 3;
  std::vector<int32_t> acc(w3);
  for (int yy = 0; yy < dst_h; ++yy) {
    const int ymin = c.bounds[yy * 2] - row_shift, ymax = c.bounds[yy * 2 + 1];
    const int32_t* k = &c.k[static_cast<size_t>(yy) * c.ksize];
    std::fill(acc.begin(), acc.end(), int32_t{1} << (kPrecisionBits - 1));
    for (int y = 0; y < ymax; ++y) {
      const uint8_t* in = src.ptr<uint8_t>(ymin + y);
      const int32_t ky = k[y];
      for (int i = 0; i < w3; ++i) acc[i] += in[i] * ky;
    }
    uint8_t* out = dst.ptr<uint8_t>(yy);
    for (int i = 0; i < w3; ++i) out[i] = Clip8(acc[i]);
  }
  return dst;
}

}  // namespace

cv::Mat PilBicubicResizeCrop(const cv::Mat& rgb8, int64_t out_w, int64_t out_h, cv::Rect crop) {
  const bool need_h = out_w != rgb8.cols;
  const bool need_v = out_h != rgb8.rows;
  Coeffs vert;
  int first = crop.y, last = crop.y + crop.height;  // source rows the result depends on
  if (need_v) {
    vert = PrecomputeCoeffs(rgb8.rows, out_h, crop.y, crop.height);
    first = vert.bounds[0];
    last = vert.bounds[crop.height * 2 - 2] + vert.bounds[crop.height * 2 - 1];
  }
  cv::Mat tmp;
  if (need_h) {
    tmp = ResampleHorizontal(rgb8, PrecomputeCoeffs(rgb8.cols, out_w, crop.x, crop.width), first,
                             last - first);
  } else {
    tmp = rgb8(cv::Range(first, last), cv::Range(crop.x, crop.x + crop.width));
  }
  if (!need_v) return tmp.clone();
  return ResampleVertical(tmp, vert, first);
}

cv::Mat PilBicubicResize(const cv::Mat& rgb8, int out_w, int out_h) {
  return PilBicubicResizeCrop(rgb8, out_w, out_h, cv::Rect(0, 0, out_w, out_h));
}

std::string SniffImageFormat(std::string_view b) {
  auto starts = [&](std::string_view p) { return b.substr(0, p.size()) == p; };
  if (starts("\x89PNG\r\n\x1a\n")) return "PNG";
  if (starts("\xff\xd8\xff")) return "JPEG";
  if (starts("BM")) {
    // Text such as "BMW ..." is not a bitmap: the info header size must be a known one.
    if (b.size() < 18) return "BMP";
    const uint32_t dib = Le32(b, 14);
    if (dib == 12 || dib == 40 || dib == 52 || dib == 56 || dib == 64 || dib == 108 || dib == 124) {
      return "BMP";
    }
  }
  if (b.size() >= 12 && starts("RIFF") && b.substr(8, 4) == "WEBP") return "WebP";
  if (starts(std::string_view("II*\0", 4)) || starts(std::string_view("MM\0*", 4))) return "TIFF";
  if (b.size() >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6' &&
      std::isspace(static_cast<unsigned char>(b[2]))) {
    return "PNM";
  }
  if (starts("GIF87a") || starts("GIF89a")) return "GIF";
  if (starts(std::string_view("\0\0\0\x0cjP  ", 8)) || starts("\xff\x4f\xff\x51")) return "JPEG 2000";
  if (b.size() >= 12 && b.substr(4, 4) == "ftyp") return "HEIF/AVIF";
  return "";
}

absl::StatusOr<ImageHeader> ReadImageHeader(std::string_view bytes) {
  if (bytes.empty()) return absl::InvalidArgumentError("image is empty (0 bytes)");
  const std::string format = SniffImageFormat(bytes);
  if (format.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a recognised image format (first bytes: ", HexPrefix(bytes, 4), ")"));
  }
  if (format == "PNG") return PngHeader(bytes);
  if (format == "JPEG") return JpegHeader(bytes);
  if (format == "BMP") return BmpHeader(bytes);
  if (format == "WebP") return WebpHeader(bytes);
  if (format == "TIFF") return TiffHeader(bytes);
  if (format == "PNM") return PnmHeader(bytes);
  if (format == "GIF") {  // logical screen descriptor
    if (bytes.size() < 13) return Truncated("GIF", bytes.size(), 13);
    return ImageHeader{"GIF", Le16(bytes, 6), Le16(bytes, 8)};
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported image format ", format, " (supported: PNG, JPEG, BMP, WebP, GIF, TIFF, PNM)"));
}

absl::StatusOr<cv::Mat> DecodeImageRgb(std::string_view bytes, const ImageLimits& limits) {
  if (bytes.empty()) return absl::InvalidArgumentError("image is empty (0 bytes)");
  if (static_cast<int64_t>(bytes.size()) > limits.max_encoded_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("encoded image is ", bytes.size(),
                                                   " bytes, over the limit of ",
                                                   limits.max_encoded_bytes));
  }
  EQSIM_ASSIGN_OR_RETURN(ImageHeader h, ReadImageHeader(bytes));
  if (h.width <= 0 || h.height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("image has zero width or height (", h.format,
                                                   " header says ", h.width, "x", h.height, ")"));
  }
  // Header dimensions are at most 32 bits each, so the product fits in 64 unsigned bits.
  const uint64_t pixels = static_cast<uint64_t>(h.width) * static_cast<uint64_t>(h.height);
  if (pixels > static_cast<uint64_t>(limits.max_pixels)) {
    return absl::InvalidArgumentError(absl::StrCat("image is ", h.width, "x", h.height, " = ",
                                                   pixels, " pixels, over the limit of ",
                                                   limits.max_pixels));
  }
  if (h.format == "JPEG" && !limits.allow_truncated_jpeg && !JpegHasEoi(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image is truncated (JPEG, ", bytes.size(), " bytes, no end-of-image marker)"));
  }
  cv::Mat decoded;
  if (h.format == "GIF") {  // OpenCV 4.6 has no GIF reader: our own, first frame
    auto gif = DecodeGifFirstFrame(bytes, limits.max_pixels);
    if (!gif.ok()) return gif.status();
    decoded = std::move(*gif);
  } else {
    try {
      const cv::Mat buf(1, static_cast<int>(bytes.size()), CV_8U, const_cast<char*>(bytes.data()));
      decoded = cv::imdecode(buf, cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("image could not be decoded (", h.format, " ",
                                                     h.width, "x", h.height, ", ", bytes.size(),
                                                     " bytes): ", e.what()));
    }
  }
  if (decoded.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("image could not be decoded (", h.format, " ",
                                                   h.width, "x", h.height, ", ", bytes.size(),
                                                   " bytes): corrupt or truncated data"));
  }
  if (decoded.cols != h.width || decoded.rows != h.height) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image decoded to ", decoded.cols, "x", decoded.rows, " but its ", h.format,
        " header says ", h.width, "x", h.height));
  }
  auto rgb = ToRgb8(decoded);
  if (!rgb.ok()) return Annotate(rgb.status(), absl::StrCat(h.format, " image"));
  return rgb;
}

std::string EncodePng(const cv::Mat& rgb8) {
  if (rgb8.empty() || rgb8.type() != CV_8UC3) return "";
  cv::Mat bgr;
  cv::cvtColor(rgb8, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> out;
  try {
    if (!cv::imencode(".png", bgr, out, {cv::IMWRITE_PNG_COMPRESSION, 3})) return "";
  } catch (const cv::Exception&) {
    return "";
  }
  return std::string(out.begin(), out.end());
}

absl::StatusOr<cv::Mat> NpyFrameRgbFromBytes(std::string_view bytes, std::string_view name) {
  EQSIM_ASSIGN_OR_RETURN(NpyArray a, ReadNpy(bytes, name));
  if (a.dtype != "|u1" && a.dtype != "<u1" && a.dtype != ">u1" && a.dtype != "=u1") {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(name), ": frame dtype is '", a.dtype, "', expected uint8 ('|u1')"));
  }
  if (a.shape.size() != 3 || a.shape[2] != 3 || a.shape[0] <= 0 || a.shape[1] <= 0) {
    std::string s;
    for (size_t i = 0; i < a.shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", a.shape[i]);
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(name), ": frame shape is (", s, "), expected (H, W, 3) with H, W > 0"));
  }
  if (a.fortran_order) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(name), ": frame is in Fortran order; expected C order"));
  }
  if (a.shape[0] > (1 << 20) || a.shape[1] > (1 << 20)) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(name), ": frame is too large"));
  }
  const cv::Mat bgr(static_cast<int>(a.shape[0]), static_cast<int>(a.shape[1]), CV_8UC3,
                    a.data.data());
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

absl::StatusOr<cv::Mat> LoadNpyFrameRgb(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open .npy frame"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return NpyFrameRgbFromBytes(ss.str(), path);
}

// ---------------- ImagePreprocessor ----------------

absl::StatusOr<ImagePreprocessor> ImagePreprocessor::Create(const config::ImagePreprocess& cfg,
                                                            const ImageLimits& limits) {
  ImagePreprocessor p;
  p.limits_ = limits;
  if (limits.max_encoded_bytes <= 0 || limits.max_pixels <= 0) {
    return absl::InvalidArgumentError("image limits must be positive");
  }
  switch (cfg.recipe()) {
    case config::ImagePreprocess::RECIPE_UNSPECIFIED:
    case config::ImagePreprocess::NATIVE:
      p.recipe_ = config::ImagePreprocess::NATIVE;
      p.size_ = 64;
      break;
    case config::ImagePreprocess::CLIP: {
      p.recipe_ = config::ImagePreprocess::CLIP;
      p.size_ = 224;
      const float m[3] = {0.48145466f, 0.4578275f, 0.40821073f};
      const float s[3] = {0.26862954f, 0.26130258f, 0.27577711f};
      std::copy(m, m + 3, p.mean_);
      std::copy(s, s + 3, p.std_);
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("image.recipe: unknown recipe value ", static_cast<int>(cfg.recipe())));
  }
  if (cfg.size() != 0) {
    if (cfg.size() < 8 || cfg.size() > 1024) {
      return absl::InvalidArgumentError(
          absl::StrCat("image.size must be 0 (recipe default) or in [8, 1024], got ", cfg.size()));
    }
    p.size_ = cfg.size();
  }
  auto take3 = [](const google::protobuf::RepeatedField<float>& v, std::string_view field,
                  bool positive, float* out) -> absl::Status {
    if (v.empty()) return absl::OkStatus();
    if (v.size() != 3) {
      return absl::InvalidArgumentError(absl::StrCat("image.", std::string(field),
                                                     " must have 3 values (R, G, B) or none, got ",
                                                     v.size()));
    }
    for (int i = 0; i < 3; ++i) {
      if (!std::isfinite(v[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("image.", std::string(field), "[", i, "] must be finite, got ", v[i]));
      }
      if (positive && !(v[i] > 0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("image.", std::string(field), "[", i, "] must be > 0, got ", v[i]));
      }
      out[i] = v[i];
    }
    return absl::OkStatus();
  };
  EQSIM_RETURN_IF_ERROR(take3(cfg.mean(), "mean", false, p.mean_));
  EQSIM_RETURN_IF_ERROR(take3(cfg.std(), "std", true, p.std_));
  return p;
}

absl::StatusOr<ImageTensor> ImagePreprocessor::FromEncoded(std::string_view bytes) const {
  EQSIM_ASSIGN_OR_RETURN(cv::Mat rgb, DecodeImageRgb(bytes, limits_));
  return FromRgb(rgb);
}

ImageTensor ImagePreprocessor::FromRgb(const cv::Mat& input) const {
  cv::Mat rgb = input;
  if (rgb.empty()) {
    rgb = cv::Mat(1, 1, CV_8UC3, cv::Scalar(0, 0, 0));
  } else if (rgb.type() != CV_8UC3) {
    // Same conversion as decoding; the channels of 3/4-channel input are taken as RGB(A).
    // Depths other than 8U / 16U / 32F / 64F (which decoders never produce) become black.
    cv::Mat converted;
    try {
      cv::Mat src = rgb;
      if (src.depth() == CV_64F) src.convertTo(src, CV_32F);
      cv::Mat swapped = src;
      if (src.channels() == 3) cv::cvtColor(src, swapped, cv::COLOR_RGB2BGR);
      if (src.channels() == 4) cv::cvtColor(src, swapped, cv::COLOR_RGBA2BGRA);
      auto c = ToRgb8(swapped);
      if (c.ok()) converted = std::move(*c);
    } catch (const cv::Exception&) {
    }
    rgb = converted.empty() ? cv::Mat(input.rows, input.cols, CV_8UC3, cv::Scalar(0, 0, 0)) : converted;
  }
  const int s = size_;
  cv::Mat out;
  if (recipe_ == config::ImagePreprocess::CLIP) {
    const int64_t w = rgb.cols, h = rgb.rows;
    const int64_t shortside = std::min(w, h), longside = std::max(w, h);
    // torchvision Resize(int): short side to s, long side int(s * long / short).
    int64_t nw = w, nh = h;
    if (shortside != s) {
      const auto new_long = static_cast<int64_t>(static_cast<double>(s) * longside / shortside);
      nw = w <= h ? s : new_long;
      nh = w <= h ? new_long : s;
    }
    // torchvision CenterCrop: offsets int(round((in - out) / 2.0)), Python rounding (half even).
    const int top = static_cast<int>(std::nearbyint((nh - s) / 2.0));
    const int left = static_cast<int>(std::nearbyint((nw - s) / 2.0));
    if (shortside == s) {
      out = rgb(cv::Rect(left, top, s, s));
    } else {
      // Only the crop is resampled: identical pixels, less work, and no huge intermediate
      // for extreme aspect ratios (a 20000 x 2 strip would otherwise become 2240000 x 224).
      out = PilBicubicResizeCrop(rgb, nw, nh, cv::Rect(left, top, s, s));
    }
  } else {
    // Area averaging along an axis that shrinks, bilinear along one that grows; a mixed
    // case (e.g. 200 x 30 -> 64 x 64) is done one axis at a time.
    const bool shrink_x = rgb.cols >= s, shrink_y = rgb.rows >= s;
    if (rgb.cols == s && rgb.rows == s) {
      out = rgb;
    } else if (shrink_x == shrink_y) {
      cv::resize(rgb, out, cv::Size(s, s), 0, 0, shrink_x ? cv::INTER_AREA : cv::INTER_LINEAR);
    } else {
      cv::Mat tmp;
      cv::resize(rgb, tmp, cv::Size(s, rgb.rows), 0, 0, shrink_x ? cv::INTER_AREA : cv::INTER_LINEAR);
      cv::resize(tmp, out, cv::Size(s, s), 0, 0, shrink_y ? cv::INTER_AREA : cv::INTER_LINEAR);
    }
  }
  ImageTensor t;
  t.height = s;
  t.width = s;
  t.data.resize(static_cast<size_t>(3) * s * s);
  const size_t plane = static_cast<size_t>(s) * s;
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int v = 0; v < 256; ++v) lut[c][v] = (static_cast<float>(v) / 255.0f - mean_[c]) / std_[c];
  }
  for (int y = 0; y < s; ++y) {
    const uint8_t* row = out.ptr<uint8_t>(y);
    for (int x = 0; x < s; ++x) {
      for (int c = 0; c < 3; ++c) {
        t.data[c * plane + static_cast<size_t>(y) * s + x] = lut[c][row[x * 3 + c]];
      }
    }
  }
  return t;
}

std::string ImagePreprocessor::Describe() const {
  const bool clip = recipe_ == config::ImagePreprocess::CLIP;
  return absl::StrFormat("%s %d %s mean=(%.4g,%.4g,%.4g) std=(%.4g,%.4g,%.4g)",
                         clip ? "clip" : "native", size_,
                         clip ? "bicubic+centre-crop" : "area/bilinear-resize", mean_[0], mean_[1],
                         mean_[2], std_[0], std_[1], std_[2]);
}

}  // namespace eqsim
