// The Encoder over a NativeDualEncoder module.
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "model/core/status_macros.h"
#include "model/nn/native_model.h"
#include "model/nn/torch_util.h"

namespace eqsim {
namespace {

using nn_internal::FirstLine;

class NativeEncoder : public Encoder {
 public:
  NativeEncoder(NativeDualEncoder model, torch::Device device, bool fp16)
      : model_(std::move(model)), device_(device), fp16_(fp16 && device.is_cuda()) {
    model_->to(device_, fp16_ ? torch::kHalf : torch::kFloat);
    model_->eval();
  }

  absl::StatusOr<Matrix> EncodeImages(const ImageBatch& images) override {
    EQSIM_ASSIGN_OR_RETURN(torch::Tensor x, nn_internal::ImagesToTensor(images));
    if (images.n == 0) return Matrix(0, dim());
    try {
      torch::InferenceMode guard;
      torch::Tensor in = x.to(device_, fp16_ ? torch::kHalf : torch::kFloat);
      return nn_internal::TensorToMatrix(model_->encode_image(in), images.n, dim(),
                                         "native encode_image");
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("native encode_image failed: ", FirstLine(e.what())));
    }
  }

  absl::StatusOr<Matrix> EncodeTexts(const TokenBatch& tokens) override {
    const auto& o = model_->options();
    EQSIM_ASSIGN_OR_RETURN(torch::Tensor ids,
                           nn_internal::TokensToTensor(tokens, o.context_length, o.vocab_size));
    if (tokens.n == 0) return Matrix(0, dim());
    try {
      torch::InferenceMode guard;
      return nn_internal::TensorToMatrix(model_->encode_text(ids.to(device_)), tokens.n, dim(),
                                         "native encode_text");
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat("native encode_text failed: ", FirstLine(e.what())));
    }
  }

  // Read on demand: a trainer may keep training the shared module.
  float logit_scale() const override {
    torch::NoGradGuard no_grad;
    return model_.ptr()->logit_scale().to(torch::kCPU, torch::kFloat).item<float>();
  }
  int dim() const override { return model_->options().embed_dim; }
  std::string device() const override { return nn_internal::DeviceName(device_, fp16_); }
  std::string backend() const override { return "native"; }

 private:
  NativeDualEncoder model_;
  torch::Device device_;
  bool fp16_;
};

}  // namespace

std::unique_ptr<Encoder> MakeNativeEncoder(NativeDualEncoder model, torch::Device device,
                                           bool fp16) {
  return std::make_unique<NativeEncoder>(std::move(model), device, fp16);
}

}  // namespace eqsim
