// Turning caller images into the encoded bytes the API carries, without OpenCV.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace eqsim {

// Largest raw image EncodeBmp accepts (width * height); a flag-free safety net against
// nonsense sizes that would overflow the BMP header's 32-bit fields.
inline constexpr int64_t kMaxBmpPixels = int64_t{1} << 28;

// Encodes a uint8 RGB buffer (row r starts at rgb + r * stride, 3 bytes per pixel, R first)
// as an uncompressed 24-bit BMP (BITMAPINFOHEADER, bottom-up rows, BGR, rows padded to 4
// bytes), which every decoder (the server uses OpenCV) reads losslessly.
// Errors: non-positive size, stride < 3 * width, too many pixels, null buffer.
absl::StatusOr<std::string> EncodeBmp(const uint8_t* rgb, int width, int height, int64_t stride);

// Reads a whole file. Errors name the path and the reason (missing, unreadable, too large).
absl::StatusOr<std::string> ReadBinaryFile(const std::string& path,
                                          int64_t max_bytes = int64_t{1} << 31);

// A short name of the encoded image format from its magic bytes ("png", "jpeg", "bmp",
// "webp", "gif", "tiff", "npy") or "" when unknown.
std::string SniffImageFormat(const std::string& bytes);

}  // namespace eqsim
