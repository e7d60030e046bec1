// The online inference path, torch-free (models are reached through model/core/encoder.h):
//   1. every item of a request is decoded + preprocessed (images) or validated + tokenised
//      (texts) on the preprocessing ThreadPool, in parallel;
//   2. a bad item fails the whole request with INVALID_ARGUMENT "item <i>: <what>" (the
//      lowest bad index; nothing is enqueued, other requests are untouched);
//   3. images and texts are split into chunks of at most max_batch_size and enqueued on the
//      version's two batch queues (all-or-nothing per queue: RESOURCE_EXHAUSTED when full);
//   4. a batch process function stacks the chunks of many requests, runs the encoder once and
//      scatters the rows back; the request completes when its last chunk does.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/core/tensor.h"
#include "model/repo/repository.h"
#include "server/batcher.h"
#include "server/metrics.h"
#include "server/thread_pool.h"

namespace eqsim {

// One model version being served: the loaded model and the keys of its two batch queues.
struct ServingVersion {
  std::shared_ptr<LoadedModel> model;
  BatchQueueOptions batching;
  std::string image_queue;  // "<name>/<version>/image"
  std::string text_queue;   // "<name>/<version>/text"
  const std::string& name() const { return model->name; }
  int64_t version() const { return model->version; }
};

struct InferenceLimits {
  int max_items_per_request = 1024;       // RESOURCE_EXHAUSTED above
  int64_t max_text_bytes = 64 * 1024;     // per text, INVALID_ARGUMENT above
};

struct ItemRef {
  bool is_image = false;
  std::string_view data;  // must stay valid until the done callback runs
};

struct CallOptions {
  Priority priority = Priority::kHigh;
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<CancelToken> cancel;  // optional
  bool warmup = false;  // synthetic warm-up work: not counted in metrics, not told to health
};

// Raw (not normalised) embeddings, one row per item in order, or the error.
using EmbedDone = std::function<void(absl::StatusOr<Matrix>)>;

class Inference {
 public:
  // `metrics` may be null. `on_result(ok)` is told about every encoder batch (health).
  Inference(Batcher* batcher, ThreadPool* preprocess_pool, Metrics* metrics,
            InferenceLimits limits, std::function<void(bool ok)> on_result = nullptr);

  // Registers / retires the version's two queues (RemoveQueues lets queued work finish).
  absl::Status AddQueues(const std::shared_ptr<ServingVersion>& version);
  void RemoveQueues(const ServingVersion& version);

  // Asynchronous: `done` runs exactly once, on a pool or batcher thread (or inline for
  // errors found before any work was scheduled).
  void Embed(std::shared_ptr<const ServingVersion> version, std::vector<ItemRef> items,
             CallOptions options, EmbedDone done);

  // Runs `parallel` full batches (max_batch_size items) of each modality through the version's
  // queues at once, with synthetic inputs (a blank PNG of the model's input size, a short
  // text), so that the batch workers allocate their working memory before real traffic: RSS
  // then holds steady under load, and the first requests do not pay for it. Call after
  // AddQueues and before the version serves. Blocks; errors name the modality. Nothing is done
  // when max_queue_size or max_items_per_request is below max_batch_size (batches never fill),
  // and at most max_queue_size / max_batch_size batches are queued at once.
  absl::Status WarmUp(const std::shared_ptr<const ServingVersion>& version, int parallel);

  // Blocking convenience (evaluation jobs). Rows are L2-normalised when `normalize`.
  absl::StatusOr<Matrix> EmbedSync(std::shared_ptr<const ServingVersion> version,
                                   std::vector<ItemRef> items, CallOptions options,
                                   bool normalize);

  const InferenceLimits& limits() const { return limits_; }

 private:
  struct Call;
  class ChunkTask;
  void Dispatch(const std::shared_ptr<Call>& call);
  void ProcessBatch(const std::shared_ptr<const ServingVersion>& version, bool images,
                    std::vector<std::unique_ptr<BatchTask>> batch);

  Batcher* batcher_;
  ThreadPool* pool_;
  Metrics* metrics_;
  InferenceLimits limits_;
  std::function<void(bool)> on_result_;
};

// Similarity of images against texts (embeddings need not be normalised: they are here).
struct ScoreResult {
  int rows = 0, cols = 0;
  std::vector<float> cosine, logits, probs;
  float scale = 1;  // exp(logit_scale)
};
// pairwise: image i with text i (rows = n, cols = 1); sizes must match (INVALID_ARGUMENT).
// softmax: MATRIX only; probs = softmax over each row of logits.
absl::StatusOr<ScoreResult> ComputeScores(Matrix images, Matrix texts, float logit_scale,
                                          bool pairwise, bool softmax);

}  // namespace eqsim
