#include "model/nn/native_init.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "model/core/status_macros.h"
#include "model/nn/native_model.h"

namespace eqsim {

absl::Status WriteInitialNativeWeights(const config::ModelConfig& cfg, int vocab_size,
                                       uint64_t seed, const std::string& version_dir) {
  EQSIM_ASSIGN_OR_RETURN(NativeDualEncoder model, BuildNativeModel(cfg, vocab_size, seed));
  std::error_code ec;
  std::filesystem::create_directories(version_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat(version_dir, ": cannot create folder: ", ec.message()));
  }
  return SaveNativeWeights(*model, (std::filesystem::path(version_dir) / "weights.pt").string());
}

absl::StatusOr<int64_t> NativeParameterCount(const config::ModelConfig& cfg, int vocab_size) {
  EQSIM_ASSIGN_OR_RETURN(NativeDualEncoder model, BuildNativeModel(cfg, vocab_size, 0));
  return model->parameter_count();
}

}  // namespace eqsim
