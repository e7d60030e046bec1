// The benchmark evaluator (torch-free): scores a Benchmark through an EmbeddingSource.
//
// How it works
//   * Every DISTINCT image (by resolved path) and caption (by text) is embedded once: a sample
//     score is the dot product of two L2-normalised embeddings (cosine similarity; the model's
//     logit scale is irrelevant for every metric and left out of the score files).
//   * Samples are processed in chunks of `chunk_size` (file order). A chunk embeds the items
//     its samples need that are not cached yet, in batches of `batch_size`; images are read
//     from disk (and .npy frames converted) by `threads` loader threads, `prefetch_batches`
//     batches ahead of the encoder (a pipeline). Embeddings are dropped from the cache after
//     the last chunk that uses them, so memory stays bounded on huge benchmarks (EqBen-AG).
//   * Each finished chunk is reported through `on_chunk` (persist it); `resume` accepts the
//     chunks of an interrupted run, which are then not recomputed. The final result is a pure
//     function of the per-chunk results, so resuming gives the identical result.
//   * A missing or unreadable image, or a caption the model rejects (empty, bad UTF-8), skips
//     only the samples that use it (NaN scores, listed with the reason). When a batch fails
//     with InvalidArgument its items are retried one by one to find the culprit; any other
//     error (the encoder failed, the server is unavailable) fails the evaluation.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/bench/metrics.h"
#include "model/bench/readers.h"
#include "model/core/tensor.h"

namespace eqsim {

// Where embeddings come from: a local encoder (EncoderEmbeddingSource in
// model/bench/encoder_source.h), the server's batcher, or Embed RPCs from a client.
class EmbeddingSource {
 public:
  virtual ~EmbeddingSource();
  // One L2-normalised row per encoded image (PNG, JPEG, ...), in order.
  virtual absl::StatusOr<Matrix> EmbedImages(const std::vector<std::string>& encoded_images) = 0;
  // One L2-normalised row per text, in order.
  virtual absl::StatusOr<Matrix> EmbedTexts(const std::vector<std::string>& texts) = 0;

  // Optional pipeline hook for sources that preprocess images locally (EncoderEmbeddingSource):
  // when SupportsPreprocessedImages() is true, the evaluator's loader threads call
  // PreprocessImage (decode + resize + normalise; must be thread-safe) while the calling
  // thread encodes the previous batch with EmbedPreprocessedImages. The defaults say "not
  // supported" and EmbedImages is used instead (remote sources, the server's batcher).
  virtual bool SupportsPreprocessedImages() const { return false; }
  virtual absl::StatusOr<ImageTensor> PreprocessImage(const std::string& encoded_image) const;
  // One L2-normalised row per tensor, in order.
  virtual absl::StatusOr<Matrix> EmbedPreprocessedImages(
      const std::vector<const ImageTensor*>& images);
};

// The outcome of one chunk of samples [begin, end) of Benchmark::samples.
struct ChunkResult {
  int64_t chunk = 0;  // chunk number: begin / chunk_size
  int64_t begin = 0;
  int64_t end = 0;
  // (end - begin) * ScoresPerSample(kind) cosine similarities, sample-major, in the order of
  // the score files; NaN for a sample that was not scored.
  std::vector<float> scores;
  // Samples skipped while evaluating (unreadable image, rejected caption): position in
  // Benchmark::samples and the reason. Samples skipped by the reader are not repeated here.
  std::vector<std::pair<int64_t, std::string>> skipped;

  // Compact JSON for persistence (NaN written as null); FromJson validates the shape.
  std::string ToJson() const;
  static absl::StatusOr<ChunkResult> FromJson(std::string_view json);
};

struct EvalOptions {
  int64_t batch_size = 64;    // items per EmbedImages / EmbedTexts call
  int threads = 2;            // image loader threads (file reads, .npy -> PNG)
  int prefetch_batches = 2;   // image batches loaded ahead of the encoder
  int64_t chunk_size = 2048;  // samples per chunk (the unit of progress persistence)
  int64_t max_image_bytes = int64_t{64} << 20;  // larger image files are skipped
  bool keep_scores = false;  // fill EvalResult::scores (always on for the leaderboard)
  // Called with (samples done, total samples) as work progresses; from the calling thread.
  std::function<void(int64_t, int64_t)> progress;
  // Checked between batches; when it becomes true Evaluate returns Cancelled.
  const std::atomic<bool>* cancel = nullptr;
  // Called after each finished chunk; an error aborts the evaluation with that error.
  std::function<absl::Status(const ChunkResult&)> on_chunk;
  // Chunks of an earlier, interrupted run of the SAME benchmark and chunk_size.
  std::vector<ChunkResult> resume;
};

struct EvalResult {
  BenchmarkFormat format = BenchmarkFormat::kUnspecified;
  SampleKind kind = SampleKind::kPair;
  std::vector<SubsetMetrics> subsets;  // in order of first appearance
  SubsetMetrics overall;               // micro average over all scored samples
  std::vector<SkippedEntry> skipped;   // every skipped sample, in sample order
  bool has_scores = false;
  int scores_per_sample = 4;
  std::vector<float> scores;  // samples.size() * scores_per_sample when has_scores
  // Work done by this call (resumed chunks excluded).
  int64_t images_embedded = 0;
  int64_t texts_embedded = 0;
  int64_t chunks_resumed = 0;
  double seconds = 0;
};

absl::StatusOr<EvalResult> Evaluate(const Benchmark& benchmark, EmbeddingSource& source,
                                    const EvalOptions& options = {});

// The result of a benchmark from all its chunk results (what Evaluate returns at the end).
// InvalidArgument when the chunks do not cover the samples exactly once.
absl::StatusOr<EvalResult> AggregateChunks(const Benchmark& benchmark,
                                           const std::vector<ChunkResult>& chunks,
                                           bool keep_scores);

// Score files (the GetEvaluationScores / --scores-out format):
//   kSingle (leaderboard): 1-D float32 [N], one score per entry in order (the EqBen submission)
//   kPair: float32 [N, 4] = s(c0,i0), s(c0,i1), s(c1,i0), s(c1,i1)
//   kCaptionFoil (VALSE): float32 [N, 2] = s(caption), s(foil)
// NaN marks a skipped sample.
absl::StatusOr<std::string> ScoresNpyBytes(SampleKind kind, const std::vector<float>& scores);
absl::Status WriteScoresNpy(const std::string& path, SampleKind kind,
                            const std::vector<float>& scores);

// The result as JSON: {"format", "subsets": [{subset, samples, skipped, text_score, image_score,
// group_score, pairwise_accuracy}], "overall": {...}, "skipped": [{subset, index, reason}]
// (at most max_skipped), "skipped_total", "images_embedded", "texts_embedded", "seconds"}.
std::string EvalResultToJson(const EvalResult& result, int64_t max_skipped = 1000);

}  // namespace eqsim
