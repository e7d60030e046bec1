// The model repository (Triton-like), torch-free header.
//
//   <repo>/<model>/config.pbtxt      config::ModelConfig in protobuf text format
//   <repo>/<model>/<version>/        one folder per version: a positive decimal integer
//                                    without sign or leading zeros ("1", "12"); every other
//                                    entry (files, "tmp", "01", "v2") is ignored.
//       weights.pt                   native backend
//       <torchscript.file>           torchscript backend (default model.pt)
//       config.pbtxt                 optional: a complete config overriding the model's one
//                                    for this version only (its `name` must match too)
//       vocab.txt, model_card.json   optional
// Relative tokenizer.vocab_file paths are resolved against the version folder, then the model
// folder, then LoadOptions::extra_search_dirs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "eqsim/config/model_config.pb.h"
#include "model/core/encoder.h"
#include "model/image/preprocess.h"
#include "model/text/tokenizer.h"

namespace eqsim {

inline constexpr char kConfigFileName[] = "config.pbtxt";
inline constexpr char kNativeWeightsFileName[] = "weights.pt";
inline constexpr char kDefaultTorchScriptFileName[] = "model.pt";

// Parses a text-format ModelConfig. Errors: NotFound "<path>: cannot open ...",
// InvalidArgument "<path>:3:7: Message type \"eqsim.config.ModelConfig\" has no field named
// \"embed_dims\"." (file, then the parser's line:column and message; all parse errors are
// collected, one per line).
absl::StatusOr<config::ModelConfig> ReadModelConfig(const std::string& path);

// Parses text-format config from memory; `where` names it in errors.
absl::StatusOr<config::ModelConfig> ParseModelConfig(const std::string& text,
                                                     const std::string& where);

// Writes `cfg` in text format (atomically: temp file + rename; parent folders created).
absl::Status WriteModelConfig(const config::ModelConfig& cfg, const std::string& path);

// Checks a config before anything is loaded. `where` prefixes errors (usually the config
// path); each error names the field, e.g.
//   "m/config.pbtxt: name is empty", "...: name 'a' does not match its folder 'b'" (only when
//   expected_name is not empty), "...: backend is not set (NATIVE or TORCHSCRIPT)",
//   "...: embed_dim must be > 0, got 0", "...: tokenizer.kind is not set (CLIP_BPE or WORD)",
//   "...: native.image_width must be >= 0, got -1", "...: latest and versions are mutually
//   exclusive", "...: versions[1] must be > 0, got 0", "...: batching.max_batch_size ...".
absl::Status ValidateModelConfig(const config::ModelConfig& cfg, const std::string& where,
                                 const std::string& expected_name = "");

// Returns cfg with every "0 = default" filled in (image size, tokenizer context length,
// native architecture, torchscript.file, batching, latest); validation is unchanged.
config::ModelConfig WithDefaults(const config::ModelConfig& cfg);

// Folder names under `repo` that contain a config.pbtxt, sorted. Hidden entries ('.'-prefixed)
// and folders without config.pbtxt are skipped. NotFound when `repo` is not a directory.
absl::StatusOr<std::vector<std::string>> ListModelNames(const std::string& repo);

// Numeric version folders of `model_dir`, ascending (see the file comment for what counts).
// NotFound when `model_dir` is not a directory.
absl::StatusOr<std::vector<int64_t>> ListVersions(const std::string& model_dir);

// The versions cfg asks for among `available` (ascending): cfg.versions when set (only those
// present; missing ones are left out, see MissingVersions), else the newest `latest`
// (default 1). Returns them ascending.
std::vector<int64_t> SelectVersions(const config::ModelConfig& cfg,
                                    const std::vector<int64_t>& available);
// The versions listed in cfg.versions that `available` lacks (for error reporting).
std::vector<int64_t> MissingVersions(const config::ModelConfig& cfg,
                                     const std::vector<int64_t>& available);

// max(ListVersions) + 1, or 1 when there is none (or the folder does not exist yet).
absl::StatusOr<int64_t> NextVersion(const std::string& model_dir);

// The config that applies to one version: <model_dir>/<version>/config.pbtxt when present,
// else <model_dir>/config.pbtxt; validated (name must equal `name`).
absl::StatusOr<config::ModelConfig> ReadVersionConfig(const std::string& model_dir,
                                                      const std::string& name,
                                                      int64_t version);

struct LoadOptions {
  int threads = 0;                             // LibTorch intra-op threads; 0 = leave as is
  ImageLimits image_limits;                    // for the model's ImagePreprocessor
  std::vector<std::string> extra_search_dirs;  // for relative tokenizer.vocab_file paths
  bool warmup = true;                          // run SelfTestModel at load
  // When not AUTO/unset, overrides cfg.device (e.g. a server flag --device=cpu).
  config::ModelConfig::Device device_override = config::ModelConfig::AUTO;
  bool override_device = false;
};

struct LoadedModel {
  std::string name;
  int64_t version = 0;
  std::string dir;             // the version folder
  config::ModelConfig config;  // WithDefaults() applied
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ImagePreprocessor> preprocessor;
  std::unique_ptr<Encoder> encoder;
};

// Loads and validates one version: config (version override or model's), tokenizer,
// preprocessor, encoder (model/nn/encoder_factory.h), then SelfTestModel as a warm-up. Errors name the model
// and version, e.g. NotFound "model 'm' not found in repository /r", NotFound "model m
// version 3: version folder /r/m/3 does not exist", NotFound "model m version 3: version
// folder /r/m/3 has no weights.pt", InvalidArgument "model m version 3: config.pbtxt says
// embed_dim 64 but the encoder produces 128-dimensional embeddings".
// Encodes one blank image and one short text ("a photo of a bag"); each must give a finite
// [1, embed_dim] row. Used as the warm-up at load and by the server's health self-test.
// Errors name the model, version and modality, e.g. "model m version 3: self-test encode of
// one text: ...". Safe to call while the model serves other calls.
absl::Status SelfTestModel(const LoadedModel& m);

absl::StatusOr<std::shared_ptr<LoadedModel>> LoadModelVersion(const std::string& repo,
                                                              const std::string& name,
                                                              int64_t version,
                                                              const LoadOptions& opts = {});

}  // namespace eqsim
