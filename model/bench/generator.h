// The real-image minimal-change benchmark: an EqBen-Kubric-like set built from Fashion-MNIST
// TEST images with model/data/scene.h. Every sample is two scenes of 2-4 tinted garments that
// differ by exactly one minimal change, with their plain-list captions:
//   location   two items of different (class, colour) swap slots; only kept when the two
//              captions hold the SAME multiset of words (a bag-of-words model scores chance)
//   attribute  one item gets another colour
//   counting   one more / one fewer copy of the last item
//   object     one item becomes another class (same colour and slot)
// Deterministic: the same options (seed, sizes) give byte-identical files.
//
// Layout written under `out_dir` (the image root of every annotation file is `out_dir`):
//   <subset>/<id>_0.png, <subset>/<id>_1.png          64x64 RGB renders (lossless PNG)
//   annotations/winoground.jsonl                      Winoground JSONL: id, caption_0/1,
//                                                     image_0/1 (stems), tag, secondary_tag,
//                                                     num_main_preds, collapsed_tag = subset
//   annotations/<subset>.json                         EqBen Kubric list layout
//                                                     [{image0, image1, caption0, caption1}]
//   annotations/leaderboard.json                      EqBen leaderboard list [{image, caption}],
//                                                     four entries per sample in the order
//                                                     (c0,i0) (c0,i1) (c1,i0) (c1,i1)
//   annotations/scenes.json                           sidecar: every sample's two scene
//                                                     descriptions (label, colour, image index
//                                                     per slot), for verification
//   annotations/manifest.json                         options, counts, file list
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/data/fashion_mnist.h"

namespace eqsim {

// "location", "attribute", "counting", "object".
const std::vector<std::string>& GeneratorSubsets();

struct GeneratorOptions {
  std::string out_dir;
  int64_t per_subset = 500;
  uint64_t seed = 7;
  std::vector<std::string> subsets = GeneratorSubsets();
  int min_items = 2;
  int max_items = 4;
  std::string fashion_mnist_dir = kFashionMnistDir;
  int max_attempts_per_sample = 1000;  // scenes drawn before giving up on one sample
  // (samples written, total samples); from the calling thread.
  std::function<void(int64_t, int64_t)> progress;
};

struct GeneratedBenchmark {
  std::string out_dir;
  std::string winoground_jsonl;           // path
  std::vector<std::string> subset_lists;  // paths, one per subset, in subset order
  std::string leaderboard_json;           // path
  std::string scenes_json;                // path
  int64_t samples = 0;
};

absl::StatusOr<GeneratedBenchmark> GenerateBenchmark(const GeneratorOptions& options);

// Words of a caption, lower-cased, split on spaces and punctuation, sorted: equal for two
// captions that a bag-of-words model cannot tell apart.
std::vector<std::string> CaptionWordMultiset(const std::string& caption);

}  // namespace eqsim
