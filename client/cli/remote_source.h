// An EmbeddingSource (model/bench/evaluator.h) over Embed RPCs, so the torch-free benchmark
// evaluator can score data that lives on the caller's machine with a remote model.
//
// Sharding: every EmbedImages / EmbedTexts batch is split into requests of at most
// --max-items-per-request items that are sent, --concurrency at a time, round robin over all
// the client's endpoints (and over every address of a dns:/// target), then reassembled in
// order. Each distinct item is embedded exactly once by exactly one server, with the same
// model version (pinned after the first answer), so the result equals the server-side job's.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "model/bench/evaluator.h"

namespace eqsim::cli {

class RemoteEmbeddingSource : public EmbeddingSource {
 public:
  // `client` must outlive the source.
  RemoteEmbeddingSource(Client* client, ModelSelector model);

  absl::StatusOr<Matrix> EmbedImages(const std::vector<std::string>& encoded_images) override;
  absl::StatusOr<Matrix> EmbedTexts(const std::vector<std::string>& texts) override;

  // The model that served the calls (after the first one).
  ModelSelector served_model() const;
  int64_t items_embedded() const { return items_.load(); }

 private:
  absl::StatusOr<Matrix> Run(std::vector<Input> inputs);

  Client* client_;
  mutable absl::Mutex mu_;
  ModelSelector model_ ABSL_GUARDED_BY(mu_);
  bool pinned_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int64_t> items_{0};
};

}  // namespace eqsim::cli
