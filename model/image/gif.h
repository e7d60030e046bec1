// A small GIF decoder (OpenCV 4.6 has none): the first frame of GIF87a / GIF89a files.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "opencv2/core.hpp"

namespace eqsim {

// The first image of the file on its logical screen, as BGRA CV_8UC4 (OpenCV channel order,
// for DecodeImageRgb's conversion): colours from the local or global colour table, the
// frame's transparent index (Graphic Control Extension) as alpha 0, screen area outside the
// frame in the background colour (opaque) when there is a global table, transparent
// otherwise. Interlaced frames are de-interlaced. Fails with InvalidArgument ("malformed GIF:
// ...", "image is truncated (GIF, ...)") and checks screen and frame sizes against
// max_pixels before allocating.
absl::StatusOr<cv::Mat> DecodeGifFirstFrame(std::string_view bytes, int64_t max_pixels);

}  // namespace eqsim
