#include "client/image_encoding.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sys/stat.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace eqsim {
namespace {

void PutU16(std::string& out, size_t pos, uint16_t v) {
  out[pos] = static_cast<char>(v & 0xff);
  out[pos + 1] = static_cast<char>((v >> 8) & 0xff);
}
void PutU32(std::string& out, size_t pos, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[pos + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

}  // namespace

absl::StatusOr<std::string> EncodeBmp(const uint8_t* rgb, int width, int height,
                                      int64_t stride) {
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("EncodeBmp: image size must be positive, got ", width, " x ", height));
  }
  if (static_cast<int64_t>(width) * height > kMaxBmpPixels) {
    return absl::InvalidArgumentError(absl::StrCat("EncodeBmp: image of ", width, " x ", height,
                                                   " pixels exceeds the limit of ",
                                                   kMaxBmpPixels, " pixels"));
  }
  if (stride < int64_t{3} * width) {
    return absl::InvalidArgumentError(absl::StrCat("EncodeBmp: stride ", stride,
                                                   " is smaller than 3 * width = ", 3 * width));
  }
  if (rgb == nullptr) return absl::InvalidArgumentError("EncodeBmp: null pixel buffer");

  constexpr size_t kHeader = 14 + 40;
  const size_t row_bytes = (static_cast<size_t>(width) * 3 + 3) & ~size_t{3};
  const size_t pixel_bytes = row_bytes * static_cast<size_t>(height);
  std::string out(kHeader + pixel_bytes, '\0');
  out[0] = 'B';
  out[1] = 'M';
  PutU32(out, 2, static_cast<uint32_t>(out.size()));
  PutU32(out, 10, kHeader);  // offset of the pixel array
  PutU32(out, 14, 40);       // BITMAPINFOHEADER
  PutU32(out, 18, static_cast<uint32_t>(width));
  PutU32(out, 22, static_cast<uint32_t>(height));  // positive: bottom-up rows
  PutU16(out, 26, 1);                              // planes
  PutU16(out, 28, 24);                             // bits per pixel
  PutU32(out, 30, 0);                              // BI_RGB, no compression
  PutU32(out, 34, static_cast<uint32_t>(pixel_bytes));
  PutU32(out, 38, 2835);  // 72 dpi
  PutU32(out, 42, 2835);
  char* dst = out.data() + kHeader;
  for (int y = 0; y < height; ++y) {
    const uint8_t* src = rgb + static_cast<int64_t>(height - 1 - y) * stride;
    char* row = dst + static_cast<size_t>(y) * row_bytes;
    for (int x = 0; x < width; ++x) {
      row[3 * x + 0] = static_cast<char>(src[3 * x + 2]);
      row[3 * x + 1] = static_cast<char>(src[3 * x + 1]);
      row[3 * x + 2] = static_cast<char>(src[3 * x + 0]);
    }
  }
  return out;
}

absl::StatusOr<std::string> ReadBinaryFile(const std::string& path, int64_t max_bytes) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("'", path, "': ", std::strerror(errno)));
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': is a directory"));
  }
  if (st.st_size > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", st.st_size,
                                                   " bytes exceeds the limit of ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(
        absl::StrCat("'", path, "': cannot open: ", std::strerror(errno)));
  }
  std::string data(static_cast<size_t>(st.st_size), '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (in.gcount() != static_cast<std::streamsize>(data.size())) {
    return absl::DataLossError(absl::StrCat("'", path, "': read ", in.gcount(), " of ",
                                            data.size(), " bytes"));
  }
  return data;
}

std::string SniffImageFormat(const std::string& b) {
  if (absl::StartsWith(b, "\x89PNG\r\n\x1a\n")) return "png";
  if (absl::StartsWith(b, "\xff\xd8\xff")) return "jpeg";
  if (absl::StartsWith(b, "BM") && b.size() >= 26) return "bmp";
  if (b.size() >= 12 && b.compare(0, 4, "RIFF") == 0 && b.compare(8, 4, "WEBP") == 0)
    return "webp";
  if (absl::StartsWith(b, "GIF87a") || absl::StartsWith(b, "GIF89a")) return "gif";
  if (absl::StartsWith(b, "II*") || absl::StartsWith(b, absl::string_view("MM\0*", 4))) return "tiff";
  if (absl::StartsWith(b, "\x93NUMPY")) return "npy";
  return "";
}

}  // namespace eqsim
