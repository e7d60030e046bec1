// The built-in (native) dual encoder: a small ResNet image tower and a pre-LN Transformer text
// tower projected into one joint space, as a torch::nn::Module.
//
// This header includes <torch/torch.h>: only model/nn/*.cc and model/train/*.cc may include it.
// Torch-free code reaches models through model/core/encoder.h, model/nn/encoder_factory.h and
// model/nn/native_init.h.
//
// Architecture (defaults in parentheses come from config::NativeArchitecture):
//   image: stem conv3x3 (3 -> image_width, stride image_stem_stride (2)) + GroupNorm + ReLU,
//          then
//          `image_stages` (3) stages of `image_blocks` (1) BasicBlocks; stage s has
//          image_width * 2^s channels (32, 64, 128) and its first block has stride 2. Every
//          conv is followed by GroupNorm (8 groups, or fewer when channels are not divisible):
//          unlike BatchNorm it behaves the same in train and eval and with small batches. The
//          last GroupNorm of each residual branch starts at gamma = 0 (identity-initialised
//          blocks). Pooling: adaptive average pooling to an image_pool_grid x image_pool_grid
//          grid (default 2: keeps coarse position, which global average pooling throws away
//          and which location-swap captions need), flattened, LayerNorm, then a linear
//          projection to embed_dim. image_pool_grid = 1 is the classic global average pool.
//          The LayerNorm centres the pooled (all-positive, post-ReLU) features: without it
//          every image starts with nearly the same embedding, and contrastive training first
//          collapses the text tower onto it and needs tens of steps to recover (measured).
//   text:  token embedding (vocab_size x text_width) + learned positions (context_length),
//          `text_layers` (2) pre-LN Transformer encoder layers (`text_heads` (4) heads, MLP
//          4 x width, GELU) with a key-padding mask (id 0 = pad is never attended to), a final
//          LayerNorm, the feature at the EOS position (the last non-pad token: CLIP's
//          <|endoftext|> and the word tokenizer's [EOS] both end the sequence), then a linear
//          projection (no bias) to embed_dim.
//   logit_scale: a learnable scalar initialised to init_logit_scale (ln(1/0.07)); read through
//          logit_scale(), which clamps it at ln(100) like CLIP.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "eqsim/config/model_config.pb.h"
#include "model/core/encoder.h"

namespace eqsim {

inline constexpr float kMaxLogitScale = 4.605170185988091f;  // ln(100)

// Resolved architecture: every field has its final value (no "0 = default" left).
struct NativeModelOptions {
  int image_width = 32;
  int image_stages = 3;
  int image_blocks = 1;
  int image_pool_grid = 2;
  int image_stem_stride = 2;
  int text_width = 128;
  int text_layers = 2;
  int text_heads = 4;
  int vocab_size = 0;       // required (> 0)
  int context_length = 16;  // maximum token sequence length (learned positions)
  int embed_dim = 128;
  float init_logit_scale = 2.659260036932778f;  // ln(1 / 0.07)

  // Resolves cfg.native (+ cfg.embed_dim, cfg.tokenizer.context_length) with the defaults
  // above. `vocab_size` is the tokenizer's; cfg.native.vocab_size, when set, must be >= it.
  // Errors name the field ("native.text_heads 3 does not divide native.text_width 128").
  static absl::StatusOr<NativeModelOptions> FromConfig(const config::ModelConfig& cfg,
                                                       int vocab_size);
  absl::Status Validate() const;
};

class NativeDualEncoderImpl : public torch::nn::Module {
 public:
  explicit NativeDualEncoderImpl(const NativeModelOptions& options);

  // x: float [B, 3, H, W] (any H, W >= 2^image_stages). Returns raw [B, embed_dim].
  torch::Tensor encode_image(const torch::Tensor& x);
  // ids: int64 [B, L], L <= context_length, zero padded. Returns raw [B, embed_dim].
  torch::Tensor encode_text(const torch::Tensor& ids);
  // The learnable log scale clamped at ln(100); a 0-dim tensor that carries gradient.
  torch::Tensor logit_scale();
  // S = exp(logit_scale) * normalise(img) @ normalise(txt)^T: [B_img, B_txt] (rows = images).
  torch::Tensor score_matrix(const torch::Tensor& image_emb, const torch::Tensor& text_emb);

  const NativeModelOptions& options() const { return options_; }
  int64_t parameter_count() const;

 private:
  NativeModelOptions options_;
  // image tower
  torch::nn::Conv2d stem_conv_{nullptr};
  torch::nn::GroupNorm stem_norm_{nullptr};
  torch::nn::Sequential stages_{nullptr};
  torch::nn::LayerNorm image_pool_norm_{nullptr};
  torch::nn::Linear image_proj_{nullptr};
  // text tower
  torch::nn::Embedding token_embedding_{nullptr};
  torch::Tensor positional_embedding_;
  torch::nn::ModuleList text_layers_{nullptr};
  torch::nn::LayerNorm text_final_norm_{nullptr};
  torch::nn::Linear text_proj_{nullptr};
  torch::Tensor logit_scale_;
};
TORCH_MODULE(NativeDualEncoder);

// Builds a freshly initialised model from a config (see NativeModelOptions::FromConfig).
// `seed` makes the initialisation reproducible: it reseeds torch's global CPU generator
// (torch::manual_seed) before building.
absl::StatusOr<NativeDualEncoder> BuildNativeModel(const config::ModelConfig& cfg,
                                                   int vocab_size, uint64_t seed);

// weights.pt: torch::pickle_save of a dict {"format": "eqsim-native-v1", "arch": {field: int},
// "state_dict": {name: float32 tensor}} with every named parameter and buffer (names as given
// by named_parameters(), e.g. "text_layers.0.attn_in.weight"). Python reads it with
// torch.load(path). Writes atomically (temp file + rename).
absl::Status SaveNativeWeights(NativeDualEncoderImpl& model, const std::string& path);
// Loads into an already built model. Errors: file missing or not a torch archive
// ("weights.pt: not a readable torch archive: ..."), a parameter missing from the file
// ("weights.pt: missing parameter 'image_proj.weight'"), parameters the model lacks, an
// architecture field that differs without changing shapes ("weights.pt was saved with
// native.image_stem_stride 1 but config.pbtxt builds 2"), a shape mismatch ("weights.pt:
// parameter 'image_proj.weight' has shape [128, 512] in the file but [64, 512] in the model
// built from config.pbtxt"), or non-finite values.
absl::Status LoadNativeWeights(NativeDualEncoderImpl& model, const std::string& path);

// Wraps a (trained or loaded) model as an Encoder, e.g. for evaluating while training. The
// module is shared: the caller may keep training it, but must not run a training step while
// an Encode* call is in progress. Inference runs in eval mode (no-op for this architecture),
// under torch::InferenceMode, on `device` (the model is moved there), in half precision when
// `fp16` (CUDA only; outputs are float32).
std::unique_ptr<Encoder> MakeNativeEncoder(NativeDualEncoder model, torch::Device device,
                                           bool fp16 = false);

}  // namespace eqsim
