// Writes a randomly initialised native model (torch-free header), e.g. for tests and tools
// that need a loadable version folder without training.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "eqsim/config/model_config.pb.h"

namespace eqsim {

// Builds the native model of `cfg` (NativeModelOptions::FromConfig with `vocab_size`) seeded
// with `seed` and saves it as <version_dir>/weights.pt (created with parents). Same seed,
// same config -> byte-identical weights. Does not write config.pbtxt (see
// model/repo/repository.h WriteModelConfig).
absl::Status WriteInitialNativeWeights(const config::ModelConfig& cfg, int vocab_size,
                                       uint64_t seed, const std::string& version_dir);

// Parameter count of the native model `cfg` would build (for tools and reports).
absl::StatusOr<int64_t> NativeParameterCount(const config::ModelConfig& cfg, int vocab_size);

}  // namespace eqsim
