// Creates the Encoder for one model version. Torch-free header: LibTorch stays inside
// model/nn/*.cc.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "eqsim/config/model_config.pb.h"
#include "model/core/encoder.h"

namespace eqsim {

// cfg.backend:
//   NATIVE       builds the module from cfg.native (NativeModelOptions::FromConfig with
//                `vocab_size`, the tokenizer's) and loads <version_dir>/weights.pt.
//   TORCHSCRIPT  torch::jit::load(<version_dir>/<cfg.torchscript.file or "model.pt">). The
//                module must have methods encode_image(Tensor float[B,3,H,W]) -> [B,D] and
//                encode_text(Tensor int64[B,L]) -> [B,D]; missing ones are an error. The log
//                scale comes from, in order: a method logit_scale() returning a number or
//                0-dim tensor, an attribute/parameter `logit_scale`, else ln(100) = 4.6052
//                (CLIP's trained value is ~ln(100), and similarity ranking does not depend
//                on it). A value above ln(100) is clamped, as in CLIP.
// cfg.device: CPU, CUDA (error "device CUDA requested but LibTorch has no CUDA" when
// torch::cuda::is_available() is false), AUTO (cuda:0 when available, else cpu).
// cfg.fp16: half precision on CUDA (inputs cast to half, outputs back to float32); ignored on
// CPU, and device() then says plain "cpu".
// `threads` > 0 sets LibTorch's intra-op thread count (process-wide: at::set_num_threads);
// 0 leaves it as it is.
// The encoder runs in eval mode under torch::InferenceMode; Encode* are thread-safe and may run
// concurrently. Bad inputs (wrong shape, token id out of range, a TorchScript exception)
// return InvalidArgument / Internal statuses, never crash. Outputs are checked for shape
// ([n, dim]); dim() is cfg.embed_dim.
absl::StatusOr<std::unique_ptr<Encoder>> CreateEncoder(const config::ModelConfig& cfg,
                                                       const std::string& version_dir,
                                                       int vocab_size, int threads);

// "cpu" always; "cuda:0" too when this LibTorch build has CUDA and sees a GPU.
bool TorchHasCuda();

}  // namespace eqsim
