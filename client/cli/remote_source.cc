#include "client/cli/remote_source.h"

#include <utility>

namespace eqsim::cli {

RemoteEmbeddingSource::RemoteEmbeddingSource(Client* client, ModelSelector model)
    : client_(client), model_(std::move(model)) {}

ModelSelector RemoteEmbeddingSource::served_model() const {
  absl::MutexLock lock(&mu_);
  return model_;
}

absl::StatusOr<Matrix> RemoteEmbeddingSource::EmbedImages(
    const std::vector<std::string>& encoded_images) {
  std::vector<Input> inputs;
  inputs.reserve(encoded_images.size());
  for (const std::string& b : encoded_images) inputs.push_back(Input::Image(b));
  return Run(std::move(inputs));
}

absl::StatusOr<Matrix> RemoteEmbeddingSource::EmbedTexts(const std::vector<std::string>& texts) {
  std::vector<Input> inputs;
  inputs.reserve(texts.size());
  for (const std::string& t : texts) inputs.push_back(Input::Text(t));
  return Run(std::move(inputs));
}

absl::StatusOr<Matrix> RemoteEmbeddingSource::Run(std::vector<Input> inputs) {
  if (inputs.empty()) return Matrix();
  EmbedOptions options;
  {
    absl::MutexLock lock(&mu_);
    options.model = model_;
  }
  auto emb = client_->Embed(inputs, options);
  if (!emb.ok()) return emb.status();
  {
    // Pin the whole evaluation to the version that answered first.
    absl::MutexLock lock(&mu_);
    if (!pinned_) {
      model_ = ModelSelector{emb->model_name, emb->model_version};
      pinned_ = true;
    } else if (emb->model_version != model_.version || emb->model_name != model_.name) {
      return absl::InternalError("the server answered with another model version mid-evaluation");
    }
  }
  items_ += emb->rows;
  Matrix m;
  m.rows = emb->rows;
  m.cols = emb->dim;
  m.data = std::move(emb->values);
  return m;
}

}  // namespace eqsim::cli
