// Readers for the published annotation formats of EqBen-style benchmarks (spec section 4),
// torch-free. Every reader produces the same flat, in-memory Benchmark: one Sample per
// annotation entry, in file order, with resolved image paths confined to the image root.
//
//   format               file layout                                     subset
//   kWinoground          JSON Lines {id, caption_0/1, image_0/1 (stems   collapsed_tag, else "all"
//                        + ".png"), tag, secondary_tag, collapsed_tag}
//   kEqbenPairs          JSON list [{image0, image1, caption0, caption1}] ReadOptions::subset_name,
//   kEqbenVideo          JSON object video -> list of pair objects        else the file stem
//                        (GEBC; YouCook2 with .npy BGR frames)            ("eqbenkubric_loc")
//   kEqbenAg             JSON object video -> subject -> list of pair
//                        objects whose captions are lists (first string)
//   kEqbenLeaderboard    JSON list [{image, caption}]                     first path component
//                                                                         of `image` ("eqbenag")
//   kValse               JSON object id -> {dataset, image_file, caption, linguistic_phenomena
//                        foil, linguistic_phenomena, mturk {caption,..}}
//
// Errors (InvalidArgument, NotFound for a missing annotation file) name the file, the entry and
// the field: "eqben.json: entry 12 (video 'abc'): field 'caption1': expected a string, got
// number". An entry whose image file does not exist is NOT an error: it is kept as a Sample
// with `skip_reason` set (it gets NaN scores and is listed in the results). An image path that
// escapes its root (absolute, "..", or a symlink leading outside) IS an error: the benchmark is
// refused, since the server confines evaluations to its --data-root with this.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace eqsim {

// Mirrors eqsim.v1.BenchmarkFormat (same numeric values; model/ has no proto dependency).
enum class BenchmarkFormat {
  kUnspecified = 0,
  kWinoground = 1,
  kEqbenPairs = 2,
  kEqbenVideo = 3,
  kEqbenAg = 4,
  kEqbenLeaderboard = 5,
  kValse = 6,
};

// "winoground", "eqben-pairs", "eqben-video", "eqben-ag", "eqben-leaderboard", "valse"
// (underscores accepted too). InvalidArgument listing the valid names otherwise.
absl::StatusOr<BenchmarkFormat> ParseBenchmarkFormat(std::string_view name);
std::string BenchmarkFormatName(BenchmarkFormat format);

// What one sample holds and how it is scored.
enum class SampleKind {
  kPair,         // images {i0, i1}, captions {c0, c1}: 4 scores s(c0,i0) s(c0,i1) s(c1,i0) s(c1,i1)
  kCaptionFoil,  // VALSE: images {i}, captions {caption, foil}: 2 scores s(caption) s(foil)
  kSingle,       // leaderboard: images {i}, captions {c}: 1 score s(c,i)
};
SampleKind SampleKindOf(BenchmarkFormat format);
// 4, 2 or 1.
int ScoresPerSample(SampleKind kind);

struct ImageRef {
  std::string path;         // resolved, confined to the image root (lexically normalised)
  std::string annotation;   // the path as written in the annotation (".png" appended for
                            // Winoground stems), used in messages
  bool is_npy_bgr = false;  // a .npy H x W x 3 uint8 BGR frame (EqBen YouCook2)
};

struct Sample {
  std::string subset;
  int64_t index = 0;  // entry index in the annotation file (0-based, file order, flattened
                      // over nested maps; for JSON Lines the index of the non-blank line)
  std::string key;    // human-readable locator: "id 17", "video 'abc', subject 'p1', item 2"
  std::vector<ImageRef> images;       // see SampleKind
  std::vector<std::string> captions;  // see SampleKind
  std::string skip_reason;            // non-empty: an image is missing ("image1 'x.png': file
                                      // not found"); the sample is not scored
};

struct SkippedEntry {
  std::string subset;
  int64_t index = 0;
  std::string reason;
};

struct Benchmark {
  BenchmarkFormat format = BenchmarkFormat::kUnspecified;
  SampleKind kind = SampleKind::kPair;
  std::string annotation_path;
  std::vector<Sample> samples;       // after subset / limit / VALSE-validity filtering
  int64_t entries_in_file = 0;       // all entries the file holds
  int64_t filtered_out = 0;          // dropped by subsets, limit or the VALSE validity filter
  std::vector<std::string> subsets;  // in order of first appearance among `samples`
};

struct ReadOptions {
  // Root of all images (every format; VALSE uses it for sources without an entry in
  // image_roots).
  std::string image_root;
  // VALSE: source `dataset` -> image root.
  std::map<std::string, std::string> image_roots;
  // Keep only these subsets (empty = all). Unknown names are not an error (the result simply
  // has fewer subsets); ReadBenchmark fails only if NOTHING is left and subsets were asked.
  std::vector<std::string> subsets;
  // At most this many entries per subset, the first ones in file order (0 = all).
  int64_t limit = 0;
  // VALSE: keep every entry, not only the valid ones (mturk.caption >= 2).
  bool valse_all = false;
  // EqBen pairs / video / AG: the subset name (default: the annotation file's stem).
  std::string subset_name;
  // stat() every image while reading and mark missing ones as skipped.
  bool check_images = true;
  // Refuse annotation files larger than this.
  int64_t max_annotation_bytes = int64_t{2} << 30;
};

absl::StatusOr<Benchmark> ReadBenchmark(BenchmarkFormat format, const std::string& annotation_path,
                                        const ReadOptions& options);

// Parses an annotation already in memory (`name` is used in messages as the file name).
absl::StatusOr<Benchmark> ParseBenchmark(BenchmarkFormat format, std::string_view content,
                                         const std::string& name, const ReadOptions& options);

// Resolves `relative` under `root` and refuses anything that escapes it: an empty or absolute
// path, a ".." component, or (for the part of the path that exists) a symlink whose target lies
// outside the root's real path. `what` names the path in messages ("image0"). The result is
// root + "/" + relative (lexically normalised). InvalidArgument on escape.
absl::StatusOr<std::string> ResolveConfinedPath(const std::string& root,
                                                const std::string& relative,
                                                const std::string& what = "path");

// The encoded bytes of one image: PNG / JPEG / ... files as they are; a .npy BGR frame is
// converted to RGB and encoded as PNG (lossless). Errors (NotFound, InvalidArgument) name the
// file.
absl::StatusOr<std::string> LoadImageBytes(const ImageRef& image,
                                           int64_t max_bytes = int64_t{64} << 20);

// Reads a whole file (NotFound / InvalidArgument over max_bytes; errors name the path).
absl::StatusOr<std::string> ReadFileBytes(const std::string& path, int64_t max_bytes);

}  // namespace eqsim
