#include "model/bench/generator.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "model/core/status_macros.h"
#include "model/data/scene.h"
#include "model/image/preprocess.h"
#include "nlohmann/json.hpp"

namespace eqsim {
namespace {

using Json = nlohmann::ordered_json;

absl::Status MakeDirs(const std::string& path) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!cur.empty() && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot create directory '", cur, "': ", std::strerror(errno)));
      }
    }
    if (i < path.size()) cur.push_back(path[i]);
  }
  return absl::OkStatus();
}

absl::Status WriteFile(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot write '", tmp, "': ", std::strerror(errno)));
    }
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out) return absl::InvalidArgumentError(absl::StrCat("write failed: '", tmp, "'"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot rename '", tmp, "' to '", path, "': ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

Json SceneJson(const Scene& s) {
  Json items = Json::array();
  for (const auto& it : s.items) {
    items.push_back({{"label", it.label}, {"color", it.color}, {"image_index", it.image_index}});
  }
  return items;
}

// Applies the subset's change; false when impossible for this scene.
bool Change(const std::string& subset, const Scene& in, const FashionMnist& data,
            std::mt19937_64& rng, Scene* out) {
  if (subset == "location") {
    if (!SwapTwoItems(in, rng, out)) return false;
    // Keep only swaps a bag-of-words model cannot detect.
    return CaptionWordMultiset(SceneCaption(in)) == CaptionWordMultiset(SceneCaption(*out));
  }
  if (subset == "attribute") return RecolorOneItem(in, rng, out);
  if (subset == "counting") return ChangeCount(in, data, rng, out);
  if (subset == "object") return ReplaceOneItem(in, data, rng, out);
  return false;
}

}  // namespace

const std::vector<std::string>& GeneratorSubsets() {
  static const auto* kSubsets =
      new std::vector<std::string>{"location", "attribute", "counting", "object"};
  return *kSubsets;
}

std::vector<std::string> CaptionWordMultiset(const std::string& caption) {
  std::vector<std::string> words;
  std::string cur;
  for (char ch : caption) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c >= 0x80) {
      cur.push_back(static_cast<char>(std::tolower(c)));
    } else if (!cur.empty()) {
      words.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) words.push_back(std::move(cur));
  std::sort(words.begin(), words.end());
  return words;
}

absl::StatusOr<GeneratedBenchmark> GenerateBenchmark(const GeneratorOptions& options) {
  if (options.out_dir.empty()) return absl::InvalidArgumentError("out_dir is not set");
  if (options.per_subset <= 0 || options.per_subset > 1'000'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("per_subset must be in [1, 1000000], got ", options.per_subset));
  }
  if (options.min_items < 2 || options.max_items > kSceneMaxItems ||
      options.min_items > options.max_items) {
    return absl::InvalidArgumentError(absl::StrCat("items per scene must satisfy 2 <= min_items (",
                                                   options.min_items, ") <= max_items (",
                                                   options.max_items, ") <= ", kSceneMaxItems));
  }
  if (options.subsets.empty()) return absl::InvalidArgumentError("no subsets requested");
  for (const auto& s : options.subsets) {
    const auto& all = GeneratorSubsets();
    if (std::find(all.begin(), all.end(), s) == all.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown subset '", s, "'; expected one of ", absl::StrJoin(all, ", ")));
    }
  }
  EQSIM_ASSIGN_OR_RETURN(FashionMnist data,
                         LoadFashionMnist(FashionMnistSplit::kTest, options.fashion_mnist_dir));

  GeneratedBenchmark gen;
  gen.out_dir = options.out_dir;
  const std::string ann_dir = options.out_dir + "/annotations";
  EQSIM_RETURN_IF_ERROR(MakeDirs(ann_dir));

  std::string wino;
  Json leaderboard = Json::array();
  Json scenes = Json::array();
  const int64_t total = options.per_subset * static_cast<int64_t>(options.subsets.size());
  int64_t id = 0;
  for (size_t si = 0; si < options.subsets.size(); ++si) {
    const std::string& subset = options.subsets[si];
    const auto& all = GeneratorSubsets();
    const uint64_t subset_no =
        static_cast<uint64_t>(std::find(all.begin(), all.end(), subset) - all.begin());
    std::mt19937_64 rng(options.seed * 0x9E3779B97F4A7C15ULL + subset_no * 0xBF58476D1CE4E5B9ULL +
                        1);
    EQSIM_RETURN_IF_ERROR(MakeDirs(options.out_dir + "/" + subset));
    Json list = Json::array();
    for (int64_t k = 0; k < options.per_subset; ++k, ++id) {
      Scene s0, s1;
      bool ok = false;
      for (int attempt = 0; attempt < options.max_attempts_per_sample && !ok; ++attempt) {
        s0 = RandomScene(data, options.min_items, options.max_items, rng);
        ok = Change(subset, s0, data, rng, &s1) && SceneCaption(s0) != SceneCaption(s1);
      }
      if (!ok) {
        return absl::InternalError(absl::StrCat("subset '", subset, "': no valid sample after ",
                                                options.max_attempts_per_sample, " attempts"));
      }
      const std::string stem = absl::StrFormat("%s/%05d", subset, id);
      const std::string rel0 = stem + "_0", rel1 = stem + "_1";
      for (const auto& [rel, scene] : {std::pair{rel0, &s0}, std::pair{rel1, &s1}}) {
        const std::string png = EncodePng(RenderScene(*scene, data));
        if (png.empty()) return absl::InternalError("PNG encoding failed");
        EQSIM_RETURN_IF_ERROR(WriteFile(options.out_dir + "/" + rel + ".png", png));
      }
      const std::string c0 = SceneCaption(s0), c1 = SceneCaption(s1);
      Json w;
      w["id"] = id;
      w["caption_0"] = c0;
      w["caption_1"] = c1;
      w["tag"] = subset;
      w["secondary_tag"] = "";
      w["num_main_preds"] = 1;
      w["collapsed_tag"] = subset;
      w["image_0"] = rel0;
      w["image_1"] = rel1;
      absl::StrAppend(&wino, w.dump(), "\n");
      list.push_back({{"image0", rel0 + ".png"},
                      {"image1", rel1 + ".png"},
                      {"caption0", c0},
                      {"caption1", c1}});
      for (const auto& [cap, img] : {std::pair{&c0, &rel0}, std::pair{&c0, &rel1},
                                     std::pair{&c1, &rel0}, std::pair{&c1, &rel1}}) {
        leaderboard.push_back({{"image", *img + ".png"}, {"caption", *cap}});
      }
      scenes.push_back({{"id", id},
                        {"subset", subset},
                        {"image0", rel0 + ".png"},
                        {"image1", rel1 + ".png"},
                        {"caption0", c0},
                        {"caption1", c1},
                        {"scene0", SceneJson(s0)},
                        {"scene1", SceneJson(s1)}});
      if (options.progress) options.progress(id + 1, total);
    }
    const std::string list_path = absl::StrCat(ann_dir, "/", subset, ".json");
    EQSIM_RETURN_IF_ERROR(WriteFile(list_path, list.dump(1)));
    gen.subset_lists.push_back(list_path);
  }
  gen.winoground_jsonl = ann_dir + "/winoground.jsonl";
  gen.leaderboard_json = ann_dir + "/leaderboard.json";
  gen.scenes_json = ann_dir + "/scenes.json";
  EQSIM_RETURN_IF_ERROR(WriteFile(gen.winoground_jsonl, wino));
  EQSIM_RETURN_IF_ERROR(WriteFile(gen.leaderboard_json, leaderboard.dump(1)));
  EQSIM_RETURN_IF_ERROR(WriteFile(gen.scenes_json, scenes.dump(1)));
  Json manifest;
  manifest["generator"] = "eqsim fashion-mnist minimal-change benchmark";
  manifest["seed"] = options.seed;
  manifest["per_subset"] = options.per_subset;
  manifest["min_items"] = options.min_items;
  manifest["max_items"] = options.max_items;
  manifest["subsets"] = options.subsets;
  manifest["samples"] = id;
  manifest["source"] = "Fashion-MNIST t10k (test split)";
  manifest["files"] = {{"winoground", "annotations/winoground.jsonl"},
                       {"leaderboard", "annotations/leaderboard.json"},
                       {"scenes", "annotations/scenes.json"}};
  EQSIM_RETURN_IF_ERROR(WriteFile(ann_dir + "/manifest.json", manifest.dump(2)));
  gen.samples = id;
  return gen;
}

}  // namespace eqsim
