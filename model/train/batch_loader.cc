#include "model/train/batch_loader.h"

#include <chrono>
#include <utility>

#include "model/core/status_macros.h"

namespace eqsim {

BatchLoader::BatchLoader(DataSource* source, const ImagePreprocessor* preprocessor,
                         const Tokenizer* tokenizer, int batch_size, int64_t start_position,
                         int queue_depth)
    : source_(source), preprocessor_(preprocessor), tokenizer_(tokenizer),
      batch_size_(batch_size), queue_depth_(std::max(1, queue_depth)),
      position_(start_position) {
  thread_ = std::thread([this] { Run(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

absl::StatusOr<TrainBatch> BatchLoader::Make(int64_t* position) {
  TrainBatch b;
  b.start_position = *position;
  std::vector<TrainSample> samples;
  samples.reserve(static_cast<size_t>(batch_size_));
  EQSIM_RETURN_IF_ERROR(source_->NextBatch(batch_size_, position, &samples));
  b.end_position = *position;
  std::vector<ImageTensor> tensors;
  tensors.reserve(samples.size());
  for (TrainSample& s : samples) {
    tensors.push_back(preprocessor_->FromRgb(s.rgb));
    b.captions.push_back(std::move(s.caption));
    b.twins += s.is_twin ? 1 : 0;
  }
  std::vector<const ImageTensor*> ptrs;
  for (const auto& t : tensors) ptrs.push_back(&t);
  b.images = StackImages(ptrs);
  EQSIM_ASSIGN_OR_RETURN(b.tokens, tokenizer_->EncodeBatch(b.captions));
  return b;
}

void BatchLoader::Run() {
  int64_t position = position_;
  while (true) {
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || static_cast<int>(queue_.size()) < queue_depth_; });
      if (stop_) return;
    }
    absl::StatusOr<TrainBatch> batch = Make(&position);
    const bool failed = !batch.ok();
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.push_back(std::move(batch));
      if (failed) failed_ = true;
    }
    cv_.notify_all();
    if (failed) return;
  }
}

absl::StatusOr<TrainBatch> BatchLoader::Next() {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return !queue_.empty(); });
  if (!queue_.front().ok()) {
    return queue_.front().status();  // an error stays, so every later Next() returns it too
  }
  absl::StatusOr<TrainBatch> b = std::move(queue_.front());
  queue_.pop_front();
  l.unlock();
  cv_.notify_all();
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return b;
}

}  // namespace eqsim
