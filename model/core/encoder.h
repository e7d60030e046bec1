// The one interface through which everything outside model/nn reaches a dual encoder.
// Implementations (model/nn) hide LibTorch; callers never include torch headers.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "model/core/tensor.h"

namespace eqsim {

class Encoder {
 public:
  virtual ~Encoder() = default;

  // images: [n, 3, H, W] as produced by the model's ImagePreprocessor.
  // Returns [n, dim] raw (not normalised) embeddings. Thread-safe.
  virtual absl::StatusOr<Matrix> EncodeImages(const ImageBatch& images) = 0;

  // tokens: [n, L] as produced by the model's Tokenizer. Returns [n, dim] raw embeddings.
  // Thread-safe.
  virtual absl::StatusOr<Matrix> EncodeTexts(const TokenBatch& tokens) = 0;

  // The learnable log temperature: similarities are exp(logit_scale()) * cosine.
  virtual float logit_scale() const = 0;
  virtual int dim() const = 0;
  // "cpu" or "cuda:0" (with " fp16" appended when running in half precision).
  virtual std::string device() const = 0;
  // "native" or "torchscript".
  virtual std::string backend() const = 0;
};

}  // namespace eqsim
