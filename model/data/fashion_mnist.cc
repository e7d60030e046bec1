#include "model/data/fashion_mnist.h"

#include <zlib.h>

#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/core/status_macros.h"

namespace eqsim {
namespace {

constexpr uint32_t kImageMagic = 0x00000803;
constexpr uint32_t kLabelMagic = 0x00000801;

struct GzCloser {
  void operator()(gzFile_s* f) const {
    if (f != nullptr) gzclose(f);
  }
};
using GzHandle = std::unique_ptr<gzFile_s, GzCloser>;

// Reads exactly `n` bytes or reports where the file ended / failed.
absl::Status ReadExact(gzFile f, const std::string& path, void* out, size_t n,
                       absl::string_view what) {
  auto* p = static_cast<unsigned char*>(out);
  size_t done = 0;
  while (done < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
    const int got = gzread(f, p + done, chunk);
    if (got < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      return absl::DataLossError(absl::StrCat(path, ": read error in ", what, ": ",
                                              msg != nullptr ? msg : "unknown zlib error"));
    }
    if (got == 0) {
      return absl::DataLossError(absl::StrCat(path, ": truncated: ", what, " needs ", n,
                                              " bytes, file ended after ", done));
    }
    done += static_cast<size_t>(got);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ReadBigEndian32(gzFile f, const std::string& path, absl::string_view what) {
  unsigned char b[4];
  absl::Status s = ReadExact(f, path, b, 4, what);
  if (!s.ok()) return s;
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

absl::StatusOr<GzHandle> Open(const std::string& path) {
  GzHandle f(gzopen(path.c_str(), "rb"));
  if (f == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open (", std::strerror(errno), ")"));
  }
  return f;
}

absl::Status ReadImages(const std::string& path, FashionMnist* out) {
  EQSIM_ASSIGN_OR_RETURN(auto f, Open(path));
  EQSIM_ASSIGN_OR_RETURN(auto magic, ReadBigEndian32(f.get(), path, "magic number"));
  if (magic != kImageMagic) {
    return absl::DataLossError(absl::StrCat(path, ": bad magic number 0x", absl::Hex(magic),
                                            " (expected 0x803, an IDX3 ubyte image file)"));
  }
  EQSIM_ASSIGN_OR_RETURN(auto count, ReadBigEndian32(f.get(), path, "image count"));
  EQSIM_ASSIGN_OR_RETURN(auto rows, ReadBigEndian32(f.get(), path, "row count"));
  EQSIM_ASSIGN_OR_RETURN(auto cols, ReadBigEndian32(f.get(), path, "column count"));
  if (rows != kFashionMnistSide || cols != kFashionMnistSide) {
    return absl::DataLossError(absl::StrCat(path, ": images are ", rows, "x", cols,
                                            ", expected 28x28"));
  }
  if (count > 10'000'000) {
    return absl::DataLossError(absl::StrCat(path, ": implausible image count ", count));
  }
  out->count = count;
  out->pixels.resize(static_cast<size_t>(count) * 28 * 28);
  return ReadExact(f.get(), path, out->pixels.data(), out->pixels.size(),
                   absl::StrCat(count, " images of 28x28"));
}

absl::Status ReadLabels(const std::string& path, FashionMnist* out) {
  EQSIM_ASSIGN_OR_RETURN(auto f, Open(path));
  EQSIM_ASSIGN_OR_RETURN(auto magic, ReadBigEndian32(f.get(), path, "magic number"));
  if (magic != kLabelMagic) {
    return absl::DataLossError(absl::StrCat(path, ": bad magic number 0x", absl::Hex(magic),
                                            " (expected 0x801, an IDX1 ubyte label file)"));
  }
  EQSIM_ASSIGN_OR_RETURN(auto count, ReadBigEndian32(f.get(), path, "label count"));
  if (static_cast<int64_t>(count) != out->count) {
    return absl::DataLossError(absl::StrCat(path, ": has ", count, " labels but the image file has ",
                                            out->count, " images"));
  }
  out->labels.resize(count);
  absl::Status s = ReadExact(f.get(), path, out->labels.data(), count,
                             absl::StrCat(count, " labels"));
  if (!s.ok()) return s;
  for (uint32_t i = 0; i < count; ++i) {
    if (out->labels[i] >= kFashionMnistClasses) {
      return absl::DataLossError(absl::StrCat(path, ": label ", i, " is ", int{out->labels[i]},
                                              ", expected 0..9"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

const std::vector<std::string>& FashionMnistClassNames() {
  static const auto* names = new std::vector<std::string>{
      "top", "trouser", "pullover", "dress", "coat",
      "sandal", "shirt", "sneaker", "bag", "ankle boot"};
  return *names;
}

const std::vector<std::string>& FashionMnistClassPlurals() {
  static const auto* names = new std::vector<std::string>{
      "tops", "trousers", "pullovers", "dresses", "coats",
      "sandals", "shirts", "sneakers", "bags", "ankle boots"};
  return *names;
}

absl::StatusOr<FashionMnist> LoadFashionMnist(FashionMnistSplit split, const std::string& dir) {
  const std::string prefix = split == FashionMnistSplit::kTrain ? "train" : "t10k";
  FashionMnist data;
  absl::Status s = ReadImages(absl::StrCat(dir, "/", prefix, "-images-idx3-ubyte.gz"), &data);
  if (!s.ok()) return s;
  s = ReadLabels(absl::StrCat(dir, "/", prefix, "-labels-idx1-ubyte.gz"), &data);
  if (!s.ok()) return s;
  return data;
}

}  // namespace eqsim
