// Image decoding and model-specific preprocessing (torch-free, OpenCV 4.6).
//
// DecodeImageRgb turns encoded bytes (PNG incl. palette / grayscale / 16-bit / alpha, JPEG
// baseline and progressive, BMP, WebP lossy / lossless / extended, GIF, TIFF, PNM) into an RGB
// CV_8UC3 image, checking limits BEFORE any pixel buffer is allocated: the byte size first,
// then the dimensions read from the format's own header (PNG IHDR, JPEG SOFn, BMP info
// header, WebP VP8 / VP8L / VP8X, TIFF first IFD, PNM header, GIF screen descriptor). GIF
// (first frame) is decoded by model/image/gif.h since OpenCV 4.6 cannot; HEIF/AVIF and
// JPEG 2000 are recognised and refused by name.
//   * Alpha is composited over BLACK (rgb * alpha / max), the same result as premultiplying,
//     so transparent regions become 0 (what a model trained on black backgrounds expects).
//   * 16-bit images are scaled to 8-bit (v * 255 / 65535, rounded).
//   * Grayscale is replicated to 3 channels.
//   * EXIF orientation is NOT applied (PIL's Image.open, which CLIP pipelines use, does not
//     either), so embeddings match the Python reference for rotated phone photos.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "eqsim/config/model_config.pb.h"
#include "model/core/tensor.h"
#include "opencv2/core.hpp"

namespace eqsim {

struct ImageLimits {
  int64_t max_encoded_bytes = 32 << 20;  // encoded size, checked first
  int64_t max_pixels = 40'000'000;       // width * height from the header, checked before decode
  // A JPEG without its end-of-image marker after the scan data was cut short (a partial
  // upload): rejected unless this is set, in which case it decodes as far as the data goes
  // (the decoder fills the rest), like PIL's LOAD_TRUNCATED_IMAGES.
  bool allow_truncated_jpeg = false;
};

// The container format recognised from the first bytes ("PNG", "JPEG", "BMP", "WebP", "GIF",
// "TIFF", ...), or "" when unknown.
std::string SniffImageFormat(std::string_view bytes);

// Width and height read from the header alone (no decoding). InvalidArgument when the format
// is unknown or the header is truncated / malformed.
struct ImageHeader {
  std::string format;  // as SniffImageFormat
  int64_t width = 0;
  int64_t height = 0;
};
absl::StatusOr<ImageHeader> ReadImageHeader(std::string_view bytes);

// Decodes into RGB CV_8UC3 (see the file comment). InvalidArgument with a precise message:
//   "image is empty (0 bytes)"
//   "encoded image is 40000000 bytes, over the limit of 33554432"
//   "not a recognised image format (first bytes: 3c 68 74 6d)"
//   "image is truncated (PNG, 20 bytes, header needs 33)"
//   "image is 30000x30000 = 900000000 pixels, over the limit of 40000000"
//   "image could not be decoded (PNG 64x64, 1200 bytes): corrupt or truncated data"
//   "image is truncated (JPEG, 5000 bytes, no end-of-image marker)"
absl::StatusOr<cv::Mat> DecodeImageRgb(std::string_view bytes, const ImageLimits& limits = {});

// PIL's Image.resize((out_w, out_h), Image.BICUBIC) for RGB CV_8UC3, reproduced with PIL's
// algorithm (separable a = -0.5 cubic, support widened by the reduction factor, horizontal pass
// then vertical, 8-bit fixed-point with 22 fraction bits), which is what CLIP's torchvision
// Resize runs. OpenCV's INTER_CUBIC differs (a = -0.75, no antialiasing).
cv::Mat PilBicubicResize(const cv::Mat& rgb8, int out_w, int out_h);
// The `crop` region (in output coordinates) of PilBicubicResize(rgb8, out_w, out_h), computed
// without the rest of the output: bit-identical to resizing then cropping.
cv::Mat PilBicubicResizeCrop(const cv::Mat& rgb8, int64_t out_w, int64_t out_h, cv::Rect crop);

// Lossless PNG of an RGB CV_8UC3 image (channels are swapped to OpenCV's BGR internally).
// Returns "" for an empty or non-CV_8UC3 Mat (or if OpenCV fails to encode).
std::string EncodePng(const cv::Mat& rgb8);

// A YouCook2 frame as released by EqBen: NumPy .npy (format v1/v2/v3), dtype |u1 (or <u1),
// C order, shape [H, W, 3] in BGR order. Returns RGB CV_8UC3. Errors name the file and say
// what is wrong (bad magic, dtype, shape, fortran order, truncated data).
absl::StatusOr<cv::Mat> LoadNpyFrameRgb(const std::string& path);
// The same from bytes already in memory (`name` is used in errors).
absl::StatusOr<cv::Mat> NpyFrameRgbFromBytes(std::string_view bytes, std::string_view name);

// Turns decoded RGB images into the float CHW tensors a model expects.
// Copyable, immutable and thread-safe.
class ImagePreprocessor {
 public:
  // Validates `cfg`: recipe (UNSPECIFIED means NATIVE), size 0 (recipe default: NATIVE 64,
  // CLIP 224) or in [8, 1024], mean/std empty or exactly 3 values, every std > 0, every value
  // finite. Errors name the field ("image.std[1] must be > 0, got 0").
  static absl::StatusOr<ImagePreprocessor> Create(const config::ImagePreprocess& cfg,
                                                  const ImageLimits& limits = {});

  // DecodeImageRgb + FromRgb.
  absl::StatusOr<ImageTensor> FromEncoded(std::string_view bytes) const;

  // RGB CV_8UC3 (any size >= 1x1) -> float [3, size, size], (x/255 - mean) / std. An empty
  // Mat is treated as one black pixel (FromEncoded never passes one).
  //   NATIVE: whole image resized to size x size: INTER_AREA along an axis that shrinks,
  //           INTER_LINEAR along one that grows (one axis at a time when they differ).
  //   CLIP:   short side to size with PIL's bicubic (PilBicubicResize), the long side
  //           int(size * long / short) as torchvision's Resize(int), then the centre
  //           size x size crop with torchvision's CenterCrop offsets (only the crop is
  //           resampled, PilBicubicResizeCrop).
  // An input that is not CV_8UC3 is converted the way DecodeImageRgb would (gray -> RGB,
  // RGBA composited over black, 16-bit scaled).
  ImageTensor FromRgb(const cv::Mat& rgb8) const;

  int size() const { return size_; }
  config::ImagePreprocess::Recipe recipe() const { return recipe_; }
  const float* mean() const { return mean_; }
  const float* std() const { return std_; }
  const ImageLimits& limits() const { return limits_; }
  // e.g. "clip 224 bicubic+centre-crop mean=(0.4815,0.4578,0.4082) std=(0.2686,0.2613,0.2758)".
  std::string Describe() const;

 private:
  ImagePreprocessor() = default;
  config::ImagePreprocess::Recipe recipe_ = config::ImagePreprocess::NATIVE;
  int size_ = 64;
  float mean_[3] = {0.5f, 0.5f, 0.5f};
  float std_[3] = {0.5f, 0.5f, 0.5f};
  ImageLimits limits_;
};

}  // namespace eqsim
