#include "model/nn/encoder_factory.h"

#include <cmath>
#include <filesystem>
#include <memory>
#include <utility>

#include <torch/script.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "model/core/status_macros.h"
#include "model/nn/native_model.h"
#include "model/nn/torch_util.h"

namespace eqsim {
namespace {

using nn_internal::FirstLine;

class TorchScriptEncoder : public Encoder {
 public:
  TorchScriptEncoder(torch::jit::Module module, torch::Device device, bool fp16, int dim,
                     float logit_scale)
      : module_(std::move(module)),
        device_(device),
        fp16_(fp16),
        dim_(dim),
        logit_scale_(logit_scale) {}

  absl::StatusOr<Matrix> EncodeImages(const ImageBatch& images) override {
    EQSIM_ASSIGN_OR_RETURN(torch::Tensor x, nn_internal::ImagesToTensor(images));
    if (images.n == 0) return Matrix(0, dim_);
    return Run("encode_image", x.to(device_, fp16_ ? torch::kHalf : torch::kFloat), images.n);
  }

  absl::StatusOr<Matrix> EncodeTexts(const TokenBatch& tokens) override {
    EQSIM_ASSIGN_OR_RETURN(torch::Tensor ids, nn_internal::TokensToTensor(tokens, 0, 0));
    if (tokens.n == 0) return Matrix(0, dim_);
    return Run("encode_text", ids.to(device_), tokens.n);
  }

  float logit_scale() const override { return logit_scale_; }
  int dim() const override { return dim_; }
  std::string device() const override { return nn_internal::DeviceName(device_, fp16_); }
  std::string backend() const override { return "torchscript"; }

 private:
  absl::StatusOr<Matrix> Run(const char* method, torch::Tensor in, int64_t n) {
    torch::Tensor out;
    try {
      torch::InferenceMode guard;
      c10::IValue v = module_.get_method(method)({in});
      if (!v.isTensor()) {
        return absl::InternalError(absl::StrCat("torchscript ", method, " returned ",
                                                v.tagKind(), ", expected a Tensor"));
      }
      out = v.toTensor();
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("torchscript ", method, " failed: ", FirstLine(e.what())));
    }
    return nn_internal::TensorToMatrix(out, n, dim_, absl::StrCat("torchscript ", method));
  }

  // Methods of a loaded, eval-mode module are safe to call from several threads at once.
  torch::jit::Module module_;
  torch::Device device_;
  bool fp16_;
  int dim_;
  float logit_scale_;
};

absl::StatusOr<double> ScalarOf(const c10::IValue& v, const std::string& what) {
  if (v.isDouble()) return v.toDouble();
  if (v.isInt()) return static_cast<double>(v.toInt());
  if (v.isTensor() && v.toTensor().numel() == 1) {
    return v.toTensor().to(torch::kCPU, torch::kDouble).item<double>();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(what, " is ", v.tagKind(), ", expected a number or a one-element tensor"));
}

// See encoder_factory.h: method logit_scale(), else attribute logit_scale, else ln(100).
absl::StatusOr<float> TorchScriptLogitScale(torch::jit::Module& m, const std::string& file) {
  double value = kMaxLogitScale;
  try {
    torch::InferenceMode guard;
    if (m.find_method("logit_scale")) {
      EQSIM_ASSIGN_OR_RETURN(value, ScalarOf(m.get_method("logit_scale")({}),
                                             file + ": logit_scale()"));
    } else if (m.hasattr("logit_scale")) {
      EQSIM_ASSIGN_OR_RETURN(value, ScalarOf(m.attr("logit_scale"), file + ": logit_scale"));
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": reading logit_scale failed: ", FirstLine(e.what())));
  }
  if (!std::isfinite(value)) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": logit_scale is not finite"));
  }
  return static_cast<float>(std::min(value, static_cast<double>(kMaxLogitScale)));
}

absl::StatusOr<torch::Device> ResolveDevice(config::ModelConfig::Device d) {
  switch (d) {
    case config::ModelConfig::CPU:
      return torch::Device(torch::kCPU);
    case config::ModelConfig::CUDA:
      if (!torch::cuda::is_available()) {
        return absl::FailedPreconditionError(
            "device CUDA requested but LibTorch has no CUDA (or sees no GPU)");
      }
      return torch::Device(torch::kCUDA, 0);
    default:
      return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0)
                                         : torch::Device(torch::kCPU);
  }
}

}  // namespace

bool TorchHasCuda() { return torch::cuda::is_available(); }

absl::StatusOr<std::unique_ptr<Encoder>> CreateEncoder(const config::ModelConfig& cfg,
                                                       const std::string& version_dir,
                                                       int vocab_size, int threads) {
  if (threads > 0) at::set_num_threads(threads);
  EQSIM_ASSIGN_OR_RETURN(torch::Device device, ResolveDevice(cfg.device()));
  const bool fp16 = cfg.fp16() && device.is_cuda();
  namespace fs = std::filesystem;

  if (cfg.backend() == config::ModelConfig::NATIVE) {
    const std::string path = (fs::path(version_dir) / "weights.pt").string();
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      return absl::NotFoundError(
          absl::StrCat("version folder ", version_dir, " has no weights.pt"));
    }
    EQSIM_ASSIGN_OR_RETURN(NativeModelOptions o, NativeModelOptions::FromConfig(cfg, vocab_size));
    try {
      NativeDualEncoder model(o);
      EQSIM_RETURN_IF_ERROR(LoadNativeWeights(*model, path));
      return MakeNativeEncoder(std::move(model), device, fp16);
    } catch (const std::exception& e) {
      return absl::InternalError(
          absl::StrCat("cannot build the native model: ", FirstLine(e.what())));
    }
  }

  if (cfg.backend() == config::ModelConfig::TORCHSCRIPT) {
    const std::string file = cfg.torchscript().file().empty() ? "model.pt" : cfg.torchscript().file();
    const std::string path = (fs::path(version_dir) / file).string();
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      return absl::NotFoundError(absl::StrCat("version folder ", version_dir, " has no ", file,
                                              " (torchscript.file)"));
    }
    if (cfg.embed_dim() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("embed_dim must be > 0 for a torchscript model, got %d", cfg.embed_dim()));
    }
    torch::jit::Module module;
    try {
      module = torch::jit::load(path, device);
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": not a loadable TorchScript module: ", FirstLine(e.what())));
    }
    for (const char* m : {"encode_image", "encode_text"}) {
      if (!module.find_method(m)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": TorchScript module has no method ", m,
                         " (export it with @torch.jit.export or trace it as a method)"));
      }
    }
    try {
      module.eval();
      if (fp16) module.to(torch::kHalf);
    } catch (const std::exception& e) {
      return absl::InternalError(absl::StrCat(path, ": ", FirstLine(e.what())));
    }
    EQSIM_ASSIGN_OR_RETURN(float scale, TorchScriptLogitScale(module, file));
    return std::unique_ptr<Encoder>(
        std::make_unique<TorchScriptEncoder>(std::move(module), device, fp16, cfg.embed_dim(), scale));
  }
  return absl::InvalidArgumentError("backend is not set (NATIVE or TORCHSCRIPT)");
}

}  // namespace eqsim
