#include "server/inference.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "model/core/status_macros.h"
#include "model/image/preprocess.h"
#include "opencv2/core.hpp"

namespace eqsim {

// The state of one Embed call, shared by its preprocessing closures and batch chunks.
struct Inference::Call {
  std::shared_ptr<const ServingVersion> version;
  std::vector<ItemRef> items;
  CallOptions options;
  EmbedDone done;

  std::vector<ImageTensor> images;              // by item index (image items)
  std::vector<std::vector<int64_t>> tokens;     // by item index (text items)
  std::vector<absl::Status> item_status;        // by item index
  std::atomic<int> pending_preprocess{0};

  std::atomic<int> pending_chunks{0};
  Matrix out;
  absl::Mutex mu;
  absl::Status status ABSL_GUARDED_BY(mu);

  void Fail(const absl::Status& s) {
    {
      absl::MutexLock lock(&mu);
      if (status.ok()) status = s;
    }
    // Siblings still queued leave the queue instead of computing for nothing.
    if (options.cancel) options.cancel->Cancel();
  }
  void ChunkDone() {
    if (pending_chunks.fetch_sub(1) != 1) return;
    absl::Status s;
    {
      absl::MutexLock lock(&mu);
      s = status;
    }
    if (s.ok()) {
      done(std::move(out));
    } else {
      done(s);
    }
  }
};

class Inference::ChunkTask : public BatchTask {
 public:
  std::shared_ptr<Call> call;
  std::vector<int> item_indices;
  void Drop(const absl::Status& status) override {
    call->Fail(status);
    call->ChunkDone();
  }
};

Inference::Inference(Batcher* batcher, ThreadPool* preprocess_pool, Metrics* metrics,
                     InferenceLimits limits, std::function<void(bool)> on_result)
    : batcher_(batcher),
      pool_(preprocess_pool),
      metrics_(metrics),
      limits_(limits),
      on_result_(std::move(on_result)) {}

absl::Status Inference::AddQueues(const std::shared_ptr<ServingVersion>& version) {
  std::shared_ptr<const ServingVersion> v = version;
  EQSIM_RETURN_IF_ERROR(batcher_->AddQueue(
      version->image_queue, version->batching,
      [this, v](std::vector<std::unique_ptr<BatchTask>> batch) {
        ProcessBatch(v, /*images=*/true, std::move(batch));
      }));
  absl::Status s = batcher_->AddQueue(
      version->text_queue, version->batching,
      [this, v](std::vector<std::unique_ptr<BatchTask>> batch) {
        ProcessBatch(v, /*images=*/false, std::move(batch));
      });
  if (!s.ok()) batcher_->RemoveQueue(version->image_queue);
  return s;
}

void Inference::RemoveQueues(const ServingVersion& version) {
  batcher_->RemoveQueue(version.image_queue);
  batcher_->RemoveQueue(version.text_queue);
}

void Inference::Embed(std::shared_ptr<const ServingVersion> version, std::vector<ItemRef> items,
                      CallOptions options, EmbedDone done) {
  if (items.empty()) {
    done(absl::InvalidArgumentError("the request has no items"));
    return;
  }
  if (static_cast<int64_t>(items.size()) > limits_.max_items_per_request) {
    done(absl::ResourceExhaustedError(absl::StrFormat(
        "the request has %d items, over the limit of %d (--max-items-per-request); split it",
        items.size(), limits_.max_items_per_request)));
    return;
  }
  auto call = std::make_shared<Call>();
  call->version = std::move(version);
  call->items = std::move(items);
  call->options = std::move(options);
  // A private token: a failed chunk cancels its siblings, never the caller's other work.
  auto token = std::make_shared<CancelToken>();
  token->parent = std::move(call->options.cancel);
  call->options.cancel = std::move(token);
  call->done = std::move(done);
  const size_t n = call->items.size();
  call->images.resize(n);
  call->tokens.resize(n);
  call->item_status.resize(n);
  call->pending_preprocess = static_cast<int>(n);
  // Items are grouped into a few closures per pool thread rather than one closure per item,
  // so that tiny texts do not pay a queue round trip each.
  const int groups = std::max(1, std::min<int>(static_cast<int>(n), pool_->size() * 2));
  for (int g = 0; g < groups; ++g) {
    pool_->Schedule([this, call, g, groups] {
      const LoadedModel& m = *call->version->model;
      const size_t n = call->items.size();
      for (size_t i = g; i < n; i += groups) {
        const ItemRef& item = call->items[i];
        if (call->options.cancel->IsCancelled()) {
          call->item_status[i] = absl::CancelledError("request cancelled");
        } else if (item.is_image) {
          auto t = m.preprocessor->FromEncoded(item.data);
          if (t.ok()) {
            call->images[i] = std::move(*t);
          } else {
            call->item_status[i] = t.status();
            if (metrics_) metrics_->PreprocessFailure("image");
          }
        } else {
          absl::Status s = ValidateText(item.data, limits_.max_text_bytes);
          if (s.ok()) {
            auto ids = m.tokenizer->Encode(item.data);
            if (ids.ok()) {
              call->tokens[i] = std::move(*ids);
            } else {
              s = ids.status();
            }
          }
          if (!s.ok()) {
            call->item_status[i] = s;
            if (metrics_) metrics_->PreprocessFailure("text");
          }
        }
        if (call->pending_preprocess.fetch_sub(1) == 1) Dispatch(call);
      }
    });
  }
}

void Inference::Dispatch(const std::shared_ptr<Call>& call) {
  const size_t n = call->items.size();
  for (size_t i = 0; i < n; ++i) {
    if (!call->item_status[i].ok()) {
      const absl::Status& s = call->item_status[i];
      if (s.code() == absl::StatusCode::kCancelled) {
        call->done(absl::CancelledError("request cancelled"));
      } else {
        // Every preprocessing error is the caller's: report it as INVALID_ARGUMENT with only
        // the offending index.
        call->done(absl::InvalidArgumentError(absl::StrCat("item ", i, ": ", s.message())));
      }
      return;
    }
  }
  const ServingVersion& v = *call->version;
  call->out = Matrix(static_cast<int64_t>(n), v.model->encoder->dim());
  std::vector<int> image_idx, text_idx;
  for (size_t i = 0; i < n; ++i) (call->items[i].is_image ? image_idx : text_idx).push_back(i);
  auto make_tasks = [&](const std::vector<int>& idx) {
    std::vector<std::unique_ptr<BatchTask>> tasks;
    for (auto [b, e] : SplitIntoChunks(static_cast<int>(idx.size()), v.batching.max_batch_size)) {
      auto t = std::make_unique<ChunkTask>();
      t->call = call;
      t->item_indices.assign(idx.begin() + b, idx.begin() + e);
      t->size = e - b;
      t->priority = call->options.priority;
      t->deadline = call->options.deadline;
      t->cancel = call->options.cancel;
      tasks.push_back(std::move(t));
    }
    return tasks;
  };
  auto image_tasks = make_tasks(image_idx);
  auto text_tasks = make_tasks(text_idx);
  // Count every chunk up front, plus one guard held while enqueueing, so that an early
  // completion cannot finish the call while chunks are still being queued.
  call->pending_chunks = static_cast<int>(image_tasks.size() + text_tasks.size()) + 1;
  for (auto* group : {&image_tasks, &text_tasks}) {
    if (group->empty()) continue;
    const int count = static_cast<int>(group->size());
    const std::string& key = group == &image_tasks ? v.image_queue : v.text_queue;
    absl::Status s = batcher_->Enqueue(key, std::move(*group));
    if (!s.ok()) {
      call->Fail(s);
      for (int i = 0; i < count; ++i) call->ChunkDone();
    }
  }
  call->ChunkDone();  // the guard
}

void Inference::ProcessBatch(const std::shared_ptr<const ServingVersion>& version, bool images,
                             std::vector<std::unique_ptr<BatchTask>> batch) {
  const absl::Time start = absl::Now();
  const LoadedModel& m = *version->model;
  const char* modality = images ? "image" : "text";
  int total = 0;
  for (auto& t : batch) total += t->size;
  // Warm-up batches (only ever made before a version serves) stay out of metrics and health.
  const bool warmup = !batch.empty() && static_cast<ChunkTask&>(*batch[0]).call->options.warmup;
  Metrics* const metrics = warmup ? nullptr : metrics_;
  if (metrics) {
    for (auto& t : batch) {
      metrics->QueueTime(m.name, modality, absl::ToDoubleSeconds(start - t->enqueue_time));
    }
  }
  absl::StatusOr<Matrix> result;
  if (images) {
    std::vector<const ImageTensor*> ptrs;
    ptrs.reserve(total);
    for (auto& t : batch) {
      auto& ct = static_cast<ChunkTask&>(*t);
      for (int i : ct.item_indices) ptrs.push_back(&ct.call->images[i]);
    }
    result = m.encoder->EncodeImages(StackImages(ptrs));
  } else {
    TokenBatch tb;
    tb.n = total;
    tb.length = m.tokenizer->context_length();
    tb.ids.reserve(static_cast<size_t>(total) * tb.length);
    for (auto& t : batch) {
      auto& ct = static_cast<ChunkTask&>(*t);
      for (int i : ct.item_indices) {
        const auto& ids = ct.call->tokens[i];
        tb.ids.insert(tb.ids.end(), ids.begin(), ids.end());
        tb.ids.resize(tb.ids.size() + (tb.length - std::min<int>(tb.length, ids.size())), 0);
      }
    }
    result = m.encoder->EncodeTexts(tb);
  }
  if (result.ok() && (result->rows != total || result->cols != m.encoder->dim())) {
    result = absl::InternalError(absl::StrFormat("encoder returned a %dx%d matrix for %d items",
                                                 result->rows, result->cols, total));
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (metrics) metrics->Batch(m.name, modality, total, seconds);
  if (!result.ok()) {
    if (metrics) metrics->InferenceFailure(m.name);
    std::fprintf(stderr, "[eqsim-server] inference failed: model %s version %lld, %s batch of %d: %s\n",
                 m.name.c_str(), static_cast<long long>(m.version), modality, total,
                 std::string(result.status().message()).c_str());
  }
  if (on_result_ && !warmup) on_result_(result.ok());
  int64_t row = 0;
  for (auto& t : batch) {
    auto& ct = static_cast<ChunkTask&>(*t);
    if (result.ok()) {
      for (int i : ct.item_indices) {
        std::copy(result->row(row), result->row(row) + result->cols, ct.call->out.row(i));
        ++row;
      }
    } else {
      ct.call->Fail(absl::InternalError(
          absl::StrFormat("inference failed (model %s version %d, %s batch of %d): %s", m.name,
                          m.version, modality, total, result.status().message())));
    }
    ct.call->ChunkDone();
  }
}

absl::Status Inference::WarmUp(const std::shared_ptr<const ServingVersion>& version,
                               int parallel) {
  const BatchQueueOptions& b = version->batching;
  const int n = b.max_batch_size;
  // Batches that can never be full (a queue or request limit below the batch size) would
  // wait max_queue_delay; such a queue's batches stay small anyway: no warm-up.
  if (n < 1 || n > b.max_queue_size || n > limits_.max_items_per_request) return absl::OkStatus();
  parallel = std::max(1, std::min(parallel, b.max_queue_size / n));
  const int size = version->model->preprocessor->size();
  const std::string png = EncodePng(cv::Mat(size, size, CV_8UC3, cv::Scalar(0, 0, 0)));
  const std::string text = "a photo of a bag";
  for (const bool images : {true, false}) {
    std::vector<ItemRef> items(n, ItemRef{images, images ? std::string_view(png) : text});
    CallOptions o;
    o.warmup = true;
    absl::BlockingCounter pending(parallel);
    absl::Mutex mu;
    absl::Status first;
    for (int i = 0; i < parallel; ++i) {
      Embed(version, items, o, [&](absl::StatusOr<Matrix> r) {
        if (!r.ok()) {
          absl::MutexLock lock(&mu);
          if (first.ok()) first = r.status();
        }
        pending.DecrementCount();
      });
    }
    pending.Wait();
    if (!first.ok()) {
      return Annotate(first, absl::StrCat("warm-up with ", parallel, " batch(es) of ", n, " ",
                                          images ? "images" : "texts"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Matrix> Inference::EmbedSync(std::shared_ptr<const ServingVersion> version,
                                            std::vector<ItemRef> items, CallOptions options,
                                            bool normalize) {
  absl::Notification done;
  absl::StatusOr<Matrix> out;
  Embed(std::move(version), std::move(items), std::move(options),
        [&](absl::StatusOr<Matrix> r) {
          out = std::move(r);
          done.Notify();
        });
  done.WaitForNotification();
  if (out.ok() && normalize) L2NormalizeRows(*out);
  return out;
}

absl::StatusOr<ScoreResult> ComputeScores(Matrix images, Matrix texts, float logit_scale,
                                          bool pairwise, bool softmax) {
  if (images.cols != texts.cols) {
    return absl::InternalError(absl::StrFormat("image dim %d != text dim %d", images.cols,
                                               texts.cols));
  }
  if (pairwise && images.rows != texts.rows) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "PAIRWISE needs as many images as texts, got %d images and %d texts", images.rows,
        texts.rows));
  }
  if (pairwise && softmax) {
    return absl::InvalidArgumentError("softmax is only defined for MATRIX mode");
  }
  L2NormalizeRows(images);
  L2NormalizeRows(texts);
  ScoreResult r;
  r.scale = std::exp(logit_scale);
  r.rows = static_cast<int>(images.rows);
  r.cols = pairwise ? 1 : static_cast<int>(texts.rows);
  r.cosine.resize(static_cast<size_t>(r.rows) * r.cols);
  const int64_t d = images.cols;
  for (int i = 0; i < r.rows; ++i) {
    for (int j = 0; j < r.cols; ++j) {
      const float* a = images.row(i);
      const float* b = texts.row(pairwise ? i : j);
      double dot = 0;
      for (int64_t k = 0; k < d; ++k) dot += static_cast<double>(a[k]) * b[k];
      r.cosine[static_cast<size_t>(i) * r.cols + j] = static_cast<float>(dot);
    }
  }
  r.logits.resize(r.cosine.size());
  for (size_t k = 0; k < r.cosine.size(); ++k) r.logits[k] = r.scale * r.cosine[k];
  if (softmax) {
    r.probs.resize(r.logits.size());
    for (int i = 0; i < r.rows; ++i) {
      const float* l = &r.logits[static_cast<size_t>(i) * r.cols];
      float* p = &r.probs[static_cast<size_t>(i) * r.cols];
      double mx = l[0];
      for (int j = 1; j < r.cols; ++j) mx = std::max<double>(mx, l[j]);
      double sum = 0;
      for (int j = 0; j < r.cols; ++j) sum += std::exp(l[j] - mx);
      for (int j = 0; j < r.cols; ++j) p[j] = static_cast<float>(std::exp(l[j] - mx) / sum);
    }
  }
  return r;
}

}  // namespace eqsim
