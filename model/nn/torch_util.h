// Internal helpers shared by the encoders of model/nn (torch header; not for other folders).
#pragma once

#include <string>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/core/tensor.h"

namespace eqsim::nn_internal {

// Checks an ImageBatch (n >= 0, sizes > 0, data size) and wraps it as a CPU float tensor
// [n, 3, H, W] without copying (the batch must outlive the tensor).
absl::StatusOr<torch::Tensor> ImagesToTensor(const ImageBatch& images);
// Checks a TokenBatch (length in [1, max_length] when max_length > 0, ids in
// [0, vocab_size) when vocab_size > 0: errors name the item and position) and wraps it as a
// CPU int64 tensor [n, L] without copying.
absl::StatusOr<torch::Tensor> TokensToTensor(const TokenBatch& tokens, int max_length,
                                             int vocab_size);
// Copies a [n, dim] float tensor (any device / floating dtype) into a Matrix, checking the
// shape and that every value is finite. `what` names the call in errors ("encode_image").
absl::StatusOr<Matrix> TensorToMatrix(const torch::Tensor& t, int64_t n, int dim,
                                      const std::string& what);
// The first line of an exception's message (torch messages carry long backtraces), except for
// errors raised inside a TorchScript module, whose first line only says "The following
// operation failed in the TorchScript interpreter." and whose last line holds the exception
// ("builtins.RuntimeError: ..."): for those, the last non-empty line.
std::string FirstLine(const std::string& s);
// "cpu", "cuda:0", with " fp16" appended when half precision.
std::string DeviceName(const torch::Device& d, bool fp16);

}  // namespace eqsim::nn_internal
