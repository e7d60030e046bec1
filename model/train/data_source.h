// Training data for eqsim-train (torch-free): the built-in Fashion-MNIST scenes, JSON Lines
// manifests and Karpathy-style caption files.
//
// Every source is a deterministic, endless stream indexed by a *position*: the sample at
// position p depends only on (seed, p), so a checkpoint only needs the position to resume
// exactly, and the producer thread may run ahead of the trainer freely.
//   fashion-mnist      position p = the p-th random scene (an RNG seeded from seed and p); with
//                      probability twin_prob it is followed in the batch by a minimally changed
//                      copy (swap / recolour / count / replace). Scenes whose caption is
//                      already in the batch are skipped (they would be false negatives of the
//                      contrastive loss).
//   manifest / karpathy  the (image, caption) records in a fresh seeded permutation per epoch:
//                      position p = record perm_e[p mod N] of epoch e = p / N.
// Bad user data (image missing / undecodable, empty or non-UTF-8 caption) is counted and
// reported with the file or line and the reason, then skipped; once more than
// max_bad_samples distinct records are bad, the source fails with an error listing the first.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/data/fashion_mnist.h"
#include "model/data/scene.h"
#include "model/image/preprocess.h"
#include "opencv2/core.hpp"

namespace eqsim {

struct TrainSample {
  cv::Mat rgb;  // RGB CV_8UC3
  std::string caption;
  bool is_twin = false;  // a minimally changed copy of the previous sample
};

struct BadSample {
  std::string where;  // "images/3.png (manifest line 4)", "annotations.jsonl:7"
  std::string why;
};

struct DataSourceOptions {
  std::string spec = "fashion-mnist";  // fashion-mnist | manifest:<path> | karpathy:<path>
  std::string image_root;              // default: the annotation file's folder
  std::string split = "train";         // karpathy: comma-separated splits ("train,restval")
  int max_bad_samples = 100;
  uint64_t seed = 0;
  // fashion-mnist only
  std::string fashion_mnist_dir = kFashionMnistDir;
  double twin_prob = 0.0;
  int min_items = 1;
  int max_items = kSceneMaxItems;
  bool random_caption_style = true;  // false: always style 0 (the benchmark's plain list)
  ImageLimits image_limits;
};

class DataSource {
 public:
  virtual ~DataSource() = default;

  // Appends `batch_size` good samples taken from position *position on, advancing it past
  // everything consumed (bad records included). Fails when the bad-sample limit is exceeded.
  // Not thread-safe (one producer).
  virtual absl::Status NextBatch(int batch_size, int64_t* position,
                                 std::vector<TrainSample>* out) = 0;

  // Every caption the source can produce (for building the word vocabulary).
  virtual std::vector<std::string> VocabularyCorpus() const = 0;

  // "fashion-mnist (train split, 60000 images, 1-4 items, twin_prob 0)".
  virtual std::string Describe() const = 0;
  // Records in one epoch (0 for the endless fashion-mnist stream).
  virtual int64_t size() const = 0;

  // Distinct bad records so far, and the ones seen (up to a few hundred kept). Thread-safe.
  int64_t bad_count() const;
  std::vector<BadSample> bad_samples() const;
  // Restores the bad-record bookkeeping from a checkpoint (keys are record indices).
  void RestoreBad(const std::vector<int64_t>& keys);
  std::vector<int64_t> bad_keys() const;

 protected:
  // Records a bad record once; returns an error when over the limit.
  absl::Status AddBad(int64_t key, BadSample bad);
  int max_bad_ = 100;

 private:
  mutable std::mutex mu_;
  std::set<int64_t> bad_keys_;
  std::vector<BadSample> bad_;
};

// Parses opts.spec and opens the source (loads Fashion-MNIST, reads and validates the
// annotation file: a malformed manifest line is an error with its line number; empty or
// non-UTF-8 captions are counted as bad samples).
absl::StatusOr<std::unique_ptr<DataSource>> OpenDataSource(const DataSourceOptions& opts);

// The full caption vocabulary of the built-in scenes: every class (singular, plural), colour,
// count word and template of every style, so that any benchmark caption is covered.
std::vector<std::string> SceneVocabularyCorpus();

// 64 x 64 held-out scenes with distinct style-0 captions, from `data` (the TEST split),
// deterministic in `seed`.
struct HeldOutScenes {
  std::vector<cv::Mat> images;
  std::vector<std::string> captions;
};
HeldOutScenes MakeHeldOutScenes(const FashionMnist& data, int count, uint64_t seed);

// A well-mixed 64-bit seed for stream position `position` (SplitMix64 of both).
uint64_t MixSeed(uint64_t seed, uint64_t position);

}  // namespace eqsim
