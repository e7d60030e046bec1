// An EmbeddingSource over a local encoder: tokenizer + image preprocessor + Encoder, e.g. a
// LoadedModel from the model repository (eqsim-eval run, bench/eval_bench). Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/bench/evaluator.h"
#include "model/core/encoder.h"
#include "model/image/preprocess.h"
#include "model/repo/repository.h"
#include "model/text/tokenizer.h"

namespace eqsim {

class EncoderEmbeddingSource : public EmbeddingSource {
 public:
  struct Options {
    int64_t max_batch_size = 64;  // items per Encoder call (larger requests are split)
    int decode_threads = 2;       // parallel image decoding + preprocessing per call
  };

  // The components must outlive the source.
  EncoderEmbeddingSource(const Tokenizer& tokenizer, const ImagePreprocessor& preprocessor,
                         Encoder& encoder, Options options);
  // Keeps `model` alive. InvalidArgument if it lacks a tokenizer, preprocessor or encoder.
  static absl::StatusOr<std::unique_ptr<EncoderEmbeddingSource>> FromModel(
      std::shared_ptr<LoadedModel> model, Options options);

  // InvalidArgument "item 3: <decode error>" names the first bad image.
  absl::StatusOr<Matrix> EmbedImages(const std::vector<std::string>& encoded_images) override;
  // InvalidArgument "text 3: text is empty" names the first bad text.
  absl::StatusOr<Matrix> EmbedTexts(const std::vector<std::string>& texts) override;

  // The evaluator decodes + preprocesses on its loader threads (a decode/encode pipeline).
  bool SupportsPreprocessedImages() const override { return true; }
  absl::StatusOr<ImageTensor> PreprocessImage(const std::string& encoded_image) const override;
  absl::StatusOr<Matrix> EmbedPreprocessedImages(
      const std::vector<const ImageTensor*>& images) override;

 private:
  std::shared_ptr<LoadedModel> keep_alive_;
  const Tokenizer& tokenizer_;
  const ImagePreprocessor& preprocessor_;
  Encoder& encoder_;
  Options options_;
};

}  // namespace eqsim
