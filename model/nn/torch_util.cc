#include "model/nn/torch_util.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace eqsim::nn_internal {

absl::StatusOr<torch::Tensor> ImagesToTensor(const ImageBatch& images) {
  if (images.n < 0) return absl::InvalidArgumentError("image batch has a negative size");
  if (images.n > 0 && (images.height <= 0 || images.width <= 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "image batch has size %dx%d, both sides must be > 0", images.height, images.width));
  }
  const int64_t expect = images.n * 3 * int64_t{images.height} * images.width;
  if (static_cast<int64_t>(images.data.size()) != expect) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "image batch holds %d floats, expected n*3*H*W = %d*3*%d*%d = %d", images.data.size(),
        images.n, images.height, images.width, expect));
  }
  return torch::from_blob(const_cast<float*>(images.data.data()),
                          {images.n, 3, images.height, images.width}, torch::kFloat);
}

absl::StatusOr<torch::Tensor> TokensToTensor(const TokenBatch& tokens, int max_length,
                                             int vocab_size) {
  if (tokens.n < 0) return absl::InvalidArgumentError("token batch has a negative size");
  if (tokens.n > 0 && tokens.length <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("token batch has length %d, must be > 0", tokens.length));
  }
  if (max_length > 0 && tokens.length > max_length) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "token batch has length %d, over the model's context length %d", tokens.length,
        max_length));
  }
  const int64_t expect = tokens.n * int64_t{tokens.length};
  if (static_cast<int64_t>(tokens.ids.size()) != expect) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "token batch holds %d ids, expected n*L = %d*%d = %d", tokens.ids.size(), tokens.n,
        tokens.length, expect));
  }
  for (int64_t i = 0; i < expect; ++i) {
    const int64_t id = tokens.ids[static_cast<size_t>(i)];
    if (id < 0 || (vocab_size > 0 && id >= vocab_size)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "text %d: token id %d at position %d is outside the vocabulary [0, %d)",
          i / tokens.length, id, i % tokens.length, vocab_size));
    }
  }
  return torch::from_blob(const_cast<int64_t*>(tokens.ids.data()),
                          {tokens.n, int64_t{tokens.length}}, torch::kLong);
}

absl::StatusOr<Matrix> TensorToMatrix(const torch::Tensor& t, int64_t n, int dim,
                                      const std::string& what) {
  if (t.dim() != 2 || t.size(0) != n || t.size(1) != dim) {
    return absl::InternalError(absl::StrCat(
        what, " returned shape [", absl::StrJoin(t.sizes().vec(), ", "), "] but config.pbtxt "
        "says embed_dim ", dim, " (expected [", n, ", ", dim, "])"));
  }
  if (!t.is_floating_point()) {
    return absl::InternalError(absl::StrCat(what, " returned a non-floating-point tensor (",
                                            std::string(c10::toString(t.scalar_type())), ")"));
  }
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  Matrix m(n, dim);
  if (n > 0) std::memcpy(m.data.data(), c.data_ptr<float>(), sizeof(float) * n * dim);
  for (int64_t i = 0; i < n; ++i) {
    const float* r = m.row(i);
    for (int j = 0; j < dim; ++j) {
      if (!std::isfinite(r[j])) {
        return absl::InternalError(absl::StrFormat(
            "%s produced a non-finite value for item %d (dimension %d)", what, i, j));
      }
    }
  }
  return m;
}

std::string FirstLine(const std::string& s) {
  auto pos = s.find('\n');
  if (pos == std::string::npos) return s;
  std::string first = s.substr(0, pos);
  if (first.find("failed in the TorchScript interpreter") != std::string::npos) {
    size_t end = s.find_last_not_of(" \t\r\n");
    if (end != std::string::npos && end > pos) {
      const size_t begin = s.rfind('\n', end) + 1;  // 0 when not found
      return s.substr(begin, end + 1 - begin);
    }
  }
  return first;
}

std::string DeviceName(const torch::Device& d, bool fp16) {
  std::string s = d.is_cuda() ? absl::StrCat("cuda:", d.has_index() ? d.index() : 0) : "cpu";
  if (fp16) s += " fp16";
  return s;
}

}  // namespace eqsim::nn_internal
