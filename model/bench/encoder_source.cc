#include "model/bench/encoder_source.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "model/core/status_macros.h"

namespace eqsim {

EncoderEmbeddingSource::EncoderEmbeddingSource(const Tokenizer& tokenizer,
                                               const ImagePreprocessor& preprocessor,
                                               Encoder& encoder, Options options)
    : tokenizer_(tokenizer), preprocessor_(preprocessor), encoder_(encoder), options_(options) {
  options_.max_batch_size = std::max<int64_t>(1, options_.max_batch_size);
  options_.decode_threads = std::max(1, options_.decode_threads);
}

absl::StatusOr<std::unique_ptr<EncoderEmbeddingSource>> EncoderEmbeddingSource::FromModel(
    std::shared_ptr<LoadedModel> model, Options options) {
  if (model == nullptr || model->tokenizer == nullptr || model->preprocessor == nullptr ||
      model->encoder == nullptr) {
    return absl::InvalidArgumentError(
        "EncoderEmbeddingSource: the model lacks a tokenizer, preprocessor or encoder");
  }
  auto source = std::make_unique<EncoderEmbeddingSource>(*model->tokenizer, *model->preprocessor,
                                                         *model->encoder, options);
  source->keep_alive_ = std::move(model);
  return source;
}

namespace {

// Appends the rows of `part` to `all` (same column count).
void AppendRows(const Matrix& part, Matrix* all) {
  if (all->rows == 0) all->cols = part.cols;
  all->data.insert(all->data.end(), part.data.begin(), part.data.end());
  all->rows += part.rows;
}

}  // namespace

absl::StatusOr<Matrix> EncoderEmbeddingSource::EmbedImages(
    const std::vector<std::string>& encoded_images) {
  const size_t n = encoded_images.size();
  Matrix all;
  if (n == 0) return all;
  std::vector<ImageTensor> tensors(n);
  std::vector<absl::Status> errors(n);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) {
      auto t = preprocessor_.FromEncoded(encoded_images[i]);
      if (t.ok()) {
        tensors[i] = *std::move(t);
      } else {
        errors[i] = t.status();
      }
    }
  };
  const size_t threads = std::min<size_t>(n, static_cast<size_t>(options_.decode_threads));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  for (size_t i = 0; i < n; ++i) {
    if (!errors[i].ok()) return Annotate(errors[i], absl::StrCat("item ", i));
  }
  std::vector<const ImageTensor*> ptrs;
  for (const auto& t : tensors) ptrs.push_back(&t);
  return EmbedPreprocessedImages(ptrs);
}

absl::StatusOr<ImageTensor> EncoderEmbeddingSource::PreprocessImage(
    const std::string& encoded_image) const {
  return preprocessor_.FromEncoded(encoded_image);
}

absl::StatusOr<Matrix> EncoderEmbeddingSource::EmbedPreprocessedImages(
    const std::vector<const ImageTensor*>& images) {
  Matrix all;
  const size_t n = images.size();
  if (n == 0) return all;
  for (size_t i = 0; i < n; ++i) {
    if (images[i] == nullptr || images[i]->height != images[0]->height ||
        images[i]->width != images[0]->width) {
      return absl::InvalidArgumentError(
          absl::StrCat("item ", i, ": image tensor size differs from the batch's"));
    }
  }
  const size_t bs = static_cast<size_t>(options_.max_batch_size);
  for (size_t start = 0; start < n; start += bs) {
    const size_t stop = std::min(n, start + bs);
    std::vector<const ImageTensor*> ptrs(images.begin() + start, images.begin() + stop);
    EQSIM_ASSIGN_OR_RETURN(Matrix m, encoder_.EncodeImages(StackImages(ptrs)));
    if (m.rows != static_cast<int64_t>(stop - start)) {
      return absl::InternalError(
          absl::StrCat("encoder returned ", m.rows, " rows for ", stop - start, " images"));
    }
    AppendRows(m, &all);
  }
  L2NormalizeRows(all);
  return all;
}

absl::StatusOr<Matrix> EncoderEmbeddingSource::EmbedTexts(const std::vector<std::string>& texts) {
  Matrix all;
  const size_t n = texts.size();
  if (n == 0) return all;
  const size_t bs = static_cast<size_t>(options_.max_batch_size);
  for (size_t start = 0; start < n; start += bs) {
    const size_t stop = std::min(n, start + bs);
    std::vector<std::string> part(texts.begin() + start, texts.begin() + stop);
    auto tokens = tokenizer_.EncodeBatch(part);
    if (!tokens.ok()) {
      // EncodeBatch names the item within `part` ("text 3: ..."); re-find it globally.
      for (size_t i = 0; i < part.size(); ++i) {
        auto one = tokenizer_.Encode(part[i]);
        if (!one.ok()) return Annotate(one.status(), absl::StrCat("text ", start + i));
      }
      return tokens.status();
    }
    EQSIM_ASSIGN_OR_RETURN(Matrix m, encoder_.EncodeTexts(*tokens));
    if (m.rows != static_cast<int64_t>(stop - start)) {
      return absl::InternalError(
          absl::StrCat("encoder returned ", m.rows, " rows for ", stop - start, " texts"));
    }
    AppendRows(m, &all);
  }
  L2NormalizeRows(all);
  return all;
}

}  // namespace eqsim
