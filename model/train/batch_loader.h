// Prepares training batches on a producer thread, ahead of the compute (torch-free).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "model/core/tensor.h"
#include "model/image/preprocess.h"
#include "model/text/tokenizer.h"
#include "model/train/data_source.h"

namespace eqsim {

struct TrainBatch {
  ImageBatch images;                  // [n, 3, size, size], preprocessed
  TokenBatch tokens;                  // [n, context_length]
  std::vector<std::string> captions;  // n
  int twins = 0;                      // minimal-change twins in the batch
  int64_t start_position = 0;         // stream positions consumed: [start, end)
  int64_t end_position = 0;
};

// Owns a thread that fills a bounded queue of `queue_depth` ready batches, starting at stream
// position `start_position`. Batches come out in stream order; the first error (bad-sample
// limit, tokenizer failure) is returned by Next() once the batches before it are consumed.
class BatchLoader {
 public:
  BatchLoader(DataSource* source, const ImagePreprocessor* preprocessor,
              const Tokenizer* tokenizer, int batch_size, int64_t start_position,
              int queue_depth);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  absl::StatusOr<TrainBatch> Next();
  // Seconds Next() spent waiting for the producer (the trainer was data-bound).
  double wait_seconds() const { return wait_seconds_; }

 private:
  void Run();
  absl::StatusOr<TrainBatch> Make(int64_t* position);

  DataSource* source_;
  const ImagePreprocessor* preprocessor_;
  const Tokenizer* tokenizer_;
  int batch_size_;
  int queue_depth_;
  int64_t position_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<absl::StatusOr<TrainBatch>> queue_;
  bool stop_ = false;
  bool failed_ = false;
  double wait_seconds_ = 0;
  std::thread thread_;
};

}  // namespace eqsim
