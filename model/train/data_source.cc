#include "model/train/data_source.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>
#include <unordered_set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "model/core/status_macros.h"
#include "model/text/tokenizer.h"
#include "nlohmann/json.hpp"

namespace eqsim {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr size_t kMaxKeptBad = 1000;

std::string TypeName(const json& j) { return j.type_name(); }

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!fs::exists(path, ec)) return absl::NotFoundError("file not found");
    return absl::PermissionDeniedError("cannot open for reading");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError("read error");
  return ss.str();
}

std::string ResolvePath(const std::string& root, const std::string& p) {
  if (p.empty() || p[0] == '/') return p;
  return (fs::path(root) / p).lexically_normal().string();
}

// ---------------------------------------------------------------- fashion-mnist

class SceneSource : public DataSource {
 public:
  SceneSource(DataSourceOptions opts, FashionMnist data)
      : opts_(std::move(opts)), data_(std::move(data)) {
    max_bad_ = opts_.max_bad_samples;
  }

  absl::Status NextBatch(int batch_size, int64_t* position,
                         std::vector<TrainSample>* out) override {
    std::unordered_set<std::string> seen;
    int added = 0;
    const int styles = SceneCaptionStyles();
    int64_t guard = 0;
    while (added < batch_size) {
      if (++guard > int64_t{1000} * batch_size + 100000) {
        return absl::FailedPreconditionError(absl::StrCat(
            "fashion-mnist: cannot fill a batch of ", batch_size,
            " scenes with distinct captions (use a smaller --batch-size or more --max-items)"));
      }
      const uint64_t p = static_cast<uint64_t>((*position)++);
      std::mt19937_64 rng(MixSeed(opts_.seed, p));
      Scene scene = RandomScene(data_, opts_.min_items, opts_.max_items, rng);
      const int style =
          opts_.random_caption_style ? std::uniform_int_distribution<int>(0, styles - 1)(rng) : 0;
      std::string content = SceneCaption(scene, 0);
      if (!seen.insert(content).second) continue;
      out->push_back(TrainSample{RenderScene(scene, data_), SceneCaption(scene, style), false});
      ++added;
      if (opts_.twin_prob <= 0 || added >= batch_size) continue;
      if (std::uniform_real_distribution<double>(0.0, 1.0)(rng) >= opts_.twin_prob) continue;
      int kinds[4] = {0, 1, 2, 3};
      std::shuffle(kinds, kinds + 4, rng);
      for (int kind : kinds) {
        Scene twin;
        bool ok = false;
        switch (kind) {
          case 0: ok = SwapTwoItems(scene, rng, &twin); break;
          case 1: ok = RecolorOneItem(scene, rng, &twin); break;
          case 2: ok = ChangeCount(scene, data_, rng, &twin); break;
          default: ok = ReplaceOneItem(scene, data_, rng, &twin); break;
        }
        if (!ok) continue;
        std::string twin_content = SceneCaption(twin, 0);
        if (!seen.insert(twin_content).second) break;
        out->push_back(TrainSample{RenderScene(twin, data_), SceneCaption(twin, style), true});
        ++added;
        break;
      }
    }
    return absl::OkStatus();
  }

  std::vector<std::string> VocabularyCorpus() const override { return SceneVocabularyCorpus(); }

  std::string Describe() const override {
    return absl::StrCat("fashion-mnist (train split, ", data_.count, " images, ",
                        opts_.min_items, "-", opts_.max_items, " items per scene, twin_prob ",
                        opts_.twin_prob, ")");
  }
  int64_t size() const override { return 0; }

 private:
  DataSourceOptions opts_;
  FashionMnist data_;
};

// ---------------------------------------------------------------- file-backed records

struct Record {
  std::string image;       // resolved path
  std::string annotation;  // as written
  std::string caption;
  std::string where;       // "manifest.jsonl:12" or "images[3].sentences[1]"
};

class RecordSource : public DataSource {
 public:
  RecordSource(DataSourceOptions opts, std::string kind, std::string file,
               std::vector<Record> records)
      : opts_(std::move(opts)), kind_(std::move(kind)), file_(std::move(file)),
        records_(std::move(records)) {
    max_bad_ = opts_.max_bad_samples;
  }

  absl::Status NextBatch(int batch_size, int64_t* position,
                         std::vector<TrainSample>* out) override {
    const int64_t n = static_cast<int64_t>(records_.size());
    if (n == 0) return absl::FailedPreconditionError(absl::StrCat(file_, ": no usable records"));
    int added = 0;
    int64_t misses = 0;  // consecutive positions without a good sample
    while (added < batch_size) {
      if (misses > n) {
        return absl::FailedPreconditionError(absl::StrCat(
            file_, ": went through every record without filling a batch (", bad_count(),
            " bad records)"));
      }
      const int64_t p = (*position)++;
      const int64_t epoch = p / n;
      if (epoch != perm_epoch_) {
        perm_.resize(static_cast<size_t>(n));
        std::iota(perm_.begin(), perm_.end(), int64_t{0});
        std::mt19937_64 rng(MixSeed(opts_.seed ^ 0x5eedf00dULL, static_cast<uint64_t>(epoch)));
        std::shuffle(perm_.begin(), perm_.end(), rng);
        perm_epoch_ = epoch;
      }
      const int64_t idx = perm_[static_cast<size_t>(p % n)];
      if (known_bad_.count(idx)) {
        ++misses;
        continue;
      }
      const Record& r = records_[static_cast<size_t>(idx)];
      auto bytes = ReadWholeFile(r.image);
      absl::StatusOr<cv::Mat> rgb = bytes.ok() ? DecodeImageRgb(*bytes, opts_.image_limits)
                                               : absl::StatusOr<cv::Mat>(bytes.status());
      if (!rgb.ok()) {
        known_bad_.insert(idx);
        EQSIM_RETURN_IF_ERROR(AddBad(
            idx, BadSample{absl::StrCat(r.annotation, " (", r.where, ")"),
                           std::string(rgb.status().message())}));
        ++misses;
        continue;
      }
      out->push_back(TrainSample{std::move(*rgb), r.caption, false});
      ++added;
      misses = 0;
    }
    return absl::OkStatus();
  }

  std::vector<std::string> VocabularyCorpus() const override {
    std::vector<std::string> c;
    c.reserve(records_.size());
    for (const Record& r : records_) c.push_back(r.caption);
    return c;
  }
  std::string Describe() const override {
    return absl::StrCat(kind_, " ", file_, " (", records_.size(), " image-caption pairs)");
  }
  int64_t size() const override { return static_cast<int64_t>(records_.size()); }

  absl::Status AddBadPublic(int64_t key, BadSample bad) { return AddBad(key, std::move(bad)); }

  // Bad-record keys restored from a checkpoint are skipped like the ones seen here.
  void MarkKnownBad(const std::vector<int64_t>& keys) {
    for (int64_t k : keys) known_bad_.insert(k);
  }

 private:
  DataSourceOptions opts_;
  std::string kind_, file_;
  std::vector<Record> records_;
  std::vector<int64_t> perm_;
  int64_t perm_epoch_ = -1;
  std::set<int64_t> known_bad_;
};

// A caption problem that makes a record bad (not fatal): empty, whitespace, non-UTF-8.
absl::Status CheckCaption(const std::string& caption) { return ValidateText(caption); }

absl::StatusOr<std::unique_ptr<DataSource>> OpenManifest(const DataSourceOptions& opts,
                                                         const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("manifest ", path, ": cannot open (",
                                            fs::exists(path) ? "permission denied" : "no such file",
                                            ")"));
  }
  const std::string root =
      opts.image_root.empty() ? fs::path(path).parent_path().string() : opts.image_root;
  std::vector<Record> records;
  std::vector<std::pair<int64_t, BadSample>> bad;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    const std::string where = absl::StrCat(path, ":", line_no);
    if (auto utf8 = DecodeUtf8(line); !utf8.ok()) {
      bad.emplace_back(-line_no, BadSample{where, std::string(utf8.status().message())});
      continue;
    }
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": not a JSON object (expected {\"image\": path, \"caption\": text})"));
    }
    if (!j.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": expected a JSON object, got ", TypeName(j)));
    }
    for (const char* field : {"image", "caption"}) {
      auto it = j.find(field);
      if (it == j.end()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": missing field '", field, "'"));
      }
      if (!it->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": field '", field,
                                                       "': expected a string, got ",
                                                       TypeName(*it)));
      }
    }
    Record r;
    r.annotation = j["image"].get<std::string>();
    r.caption = j["caption"].get<std::string>();
    r.where = absl::StrCat("line ", line_no);
    if (r.annotation.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": field 'image' is empty"));
    }
    if (absl::Status s = CheckCaption(r.caption); !s.ok()) {
      bad.emplace_back(-line_no, BadSample{where, absl::StrCat("caption: ", s.message())});
      continue;
    }
    r.image = ResolvePath(root, r.annotation);
    records.push_back(std::move(r));
  }
  auto src = std::make_unique<RecordSource>(opts, "manifest", path, std::move(records));
  for (auto& [key, b] : bad) EQSIM_RETURN_IF_ERROR(src->AddBadPublic(key, std::move(b)));
  if (src->size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("manifest ", path, ": no usable records (",
                                                   line_no, " lines, ", src->bad_count(),
                                                   " bad)"));
  }
  return std::unique_ptr<DataSource>(std::move(src));
}

absl::StatusOr<std::unique_ptr<DataSource>> OpenKarpathy(const DataSourceOptions& opts,
                                                         const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("karpathy file ", path, ": cannot open (",
                                            fs::exists(path) ? "permission denied" : "no such file",
                                            ")"));
  }
  json doc = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  if (!doc.is_object() || !doc.contains("images") || !doc["images"].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected an object with an 'images' list (dataset_*.json)"));
  }
  std::set<std::string> splits;
  for (absl::string_view s : absl::StrSplit(opts.split, ',', absl::SkipEmpty())) {
    splits.insert(std::string(absl::StripAsciiWhitespace(s)));
  }
  const std::string root =
      opts.image_root.empty() ? fs::path(path).parent_path().string() : opts.image_root;
  std::vector<Record> records;
  std::vector<std::pair<int64_t, BadSample>> bad;
  const json& images = doc["images"];
  int64_t matched_images = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    const json& im = images[i];
    const std::string at = absl::StrCat(path, ": images[", i, "]");
    if (!im.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ": expected an object, got ", TypeName(im)));
    }
    auto field = [&](const char* name) -> absl::StatusOr<const json*> {
      auto it = im.find(name);
      if (it == im.end()) {
        return absl::InvalidArgumentError(absl::StrCat(at, ": missing field '", name, "'"));
      }
      return &*it;
    };
    EQSIM_ASSIGN_OR_RETURN(const json* split, field("split"));
    if (!split->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".split: expected a string, got ",
                                                     TypeName(*split)));
    }
    if (!splits.count(split->get<std::string>())) continue;
    ++matched_images;
    EQSIM_ASSIGN_OR_RETURN(const json* filename, field("filename"));
    if (!filename->is_string() || filename->get<std::string>().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".filename: expected a file name, got ",
                                                     filename->dump()));
    }
    std::string rel = filename->get<std::string>();
    if (auto fp = im.find("filepath"); fp != im.end() && fp->is_string() && !fp->get<std::string>().empty()) {
      rel = (fs::path(fp->get<std::string>()) / rel).string();
    }
    EQSIM_ASSIGN_OR_RETURN(const json* sentences, field("sentences"));
    if (!sentences->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".sentences: expected a list, got ",
                                                     TypeName(*sentences)));
    }
    for (size_t k = 0; k < sentences->size(); ++k) {
      const json& s = (*sentences)[k];
      const std::string sat = absl::StrCat(at, ".sentences[", k, "]");
      if (!s.is_object() || !s.contains("raw") || !s["raw"].is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(sat, ": expected an object with a string 'raw'"));
      }
      Record r;
      r.annotation = rel;
      r.caption = s["raw"].get<std::string>();
      r.where = absl::StrCat("images[", i, "].sentences[", k, "]");
      if (absl::Status st = CheckCaption(r.caption); !st.ok()) {
        bad.emplace_back(-static_cast<int64_t>(i * 1000 + k) - 1,
                         BadSample{sat, absl::StrCat("caption: ", st.message())});
        continue;
      }
      r.image = ResolvePath(root, rel);
      records.push_back(std::move(r));
    }
  }
  auto src = std::make_unique<RecordSource>(opts, "karpathy", path, std::move(records));
  for (auto& [key, b] : bad) EQSIM_RETURN_IF_ERROR(src->AddBadPublic(key, std::move(b)));
  if (src->size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": no usable image-caption pairs in split '", opts.split, "' (", images.size(),
        " images in the file, ", matched_images, " in the split)"));
  }
  return std::unique_ptr<DataSource>(std::move(src));
}

}  // namespace

uint64_t MixSeed(uint64_t seed, uint64_t position) {
  auto splitmix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  return splitmix(splitmix(seed) ^ position);
}

int64_t DataSource::bad_count() const {
  std::lock_guard<std::mutex> l(mu_);
  return static_cast<int64_t>(bad_keys_.size());
}

std::vector<BadSample> DataSource::bad_samples() const {
  std::lock_guard<std::mutex> l(mu_);
  return bad_;
}

std::vector<int64_t> DataSource::bad_keys() const {
  std::lock_guard<std::mutex> l(mu_);
  return std::vector<int64_t>(bad_keys_.begin(), bad_keys_.end());
}

void DataSource::RestoreBad(const std::vector<int64_t>& keys) {
  {
    std::lock_guard<std::mutex> l(mu_);
    for (int64_t k : keys) bad_keys_.insert(k);
  }
  if (auto* rs = dynamic_cast<RecordSource*>(this)) rs->MarkKnownBad(keys);
}

absl::Status DataSource::AddBad(int64_t key, BadSample bad) {
  std::lock_guard<std::mutex> l(mu_);
  if (!bad_keys_.insert(key).second) return absl::OkStatus();
  std::cerr << "eqsim-train: skipping bad sample " << bad.where << ": " << bad.why << "\n";
  if (bad_.size() < kMaxKeptBad) bad_.push_back(bad);
  if (static_cast<int64_t>(bad_keys_.size()) > max_bad_) {
    return absl::DataLossError(absl::StrCat(
        "more than --max-bad-samples=", max_bad_, " bad samples; the first: ", bad_[0].where,
        ": ", bad_[0].why, "; the last: ", bad.where, ": ", bad.why));
  }
  return absl::OkStatus();
}

std::vector<std::string> SceneVocabularyCorpus() {
  std::vector<std::string> corpus;
  const int colors = static_cast<int>(SceneColorNames().size());
  for (int style = 0; style < SceneCaptionStyles(); ++style) {
    for (int label = 0; label < kFashionMnistClasses; ++label) {
      for (int color = 0; color < colors; ++color) {
        for (int n = 1; n <= kSceneMaxItems; ++n) {
          Scene s;
          s.items.assign(static_cast<size_t>(n), SceneItem{label, color, 0});
          corpus.push_back(SceneCaption(s, style));
        }
      }
    }
    // Lists of several runs: ", " and "and".
    Scene mixed;
    for (int i = 0; i < 3; ++i) mixed.items.push_back(SceneItem{i, i, 0});
    corpus.push_back(SceneCaption(mixed, style));
  }
  return corpus;
}

HeldOutScenes MakeHeldOutScenes(const FashionMnist& data, int count, uint64_t seed) {
  HeldOutScenes out;
  std::mt19937_64 rng(seed);
  std::unordered_set<std::string> seen;
  for (int guard = 0; static_cast<int>(out.captions.size()) < count && guard < count * 1000;
       ++guard) {
    Scene s = RandomScene(data, 1, kSceneMaxItems, rng);
    std::string c = SceneCaption(s, 0);
    if (!seen.insert(c).second) continue;
    out.images.push_back(RenderScene(s, data));
    out.captions.push_back(std::move(c));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<DataSource>> OpenDataSource(const DataSourceOptions& opts) {
  if (opts.max_bad_samples < 0) {
    return absl::InvalidArgumentError("--max-bad-samples must be >= 0");
  }
  if (opts.twin_prob < 0 || opts.twin_prob > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--twin-prob must be in [0, 1], got ", opts.twin_prob));
  }
  if (opts.spec == "fashion-mnist") {
    if (opts.min_items < 1 || opts.max_items > kSceneMaxItems || opts.min_items > opts.max_items) {
      return absl::InvalidArgumentError(absl::StrCat("scene items must satisfy 1 <= min <= max <= ",
                                                     kSceneMaxItems, ", got ", opts.min_items,
                                                     "..", opts.max_items));
    }
    auto data = LoadFashionMnist(FashionMnistSplit::kTrain, opts.fashion_mnist_dir);
    if (!data.ok()) return Annotate(data.status(), "--data fashion-mnist");
    return std::unique_ptr<DataSource>(new SceneSource(opts, std::move(*data)));
  }
  if (opts.twin_prob > 0) {
    return absl::InvalidArgumentError(
        "--twin-prob needs --data fashion-mnist (minimal-change twins are generated scenes)");
  }
  if (absl::StartsWith(opts.spec, "manifest:")) {
    return OpenManifest(opts, opts.spec.substr(9));
  }
  if (absl::StartsWith(opts.spec, "karpathy:")) {
    return OpenKarpathy(opts, opts.spec.substr(9));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--data '", opts.spec,
      "': expected fashion-mnist, manifest:<file.jsonl> or karpathy:<dataset_*.json>"));
}

}  // namespace eqsim
