#include "model/bench/readers.h"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "model/core/status_macros.h"
#include "model/image/preprocess.h"
#include "nlohmann/json.hpp"

namespace eqsim {
namespace {

using Json = nlohmann::ordered_json;

struct FormatName {
  BenchmarkFormat format;
  const char* name;
};
constexpr FormatName kFormatNames[] = {
    {BenchmarkFormat::kWinoground, "winoground"},
    {BenchmarkFormat::kEqbenPairs, "eqben-pairs"},
    {BenchmarkFormat::kEqbenVideo, "eqben-video"},
    {BenchmarkFormat::kEqbenAg, "eqben-ag"},
    {BenchmarkFormat::kEqbenLeaderboard, "eqben-leaderboard"},
    {BenchmarkFormat::kValse, "valse"},
};

std::string Quote(absl::string_view s) {
  constexpr size_t kMax = 120;
  if (s.size() > kMax) return absl::StrCat("'", s.substr(0, kMax), "...'");
  return absl::StrCat("'", s, "'");
}

// The JSON type as people say it: "string", "number", "list", "object", "null", "boolean".
std::string TypeName(const Json& j) {
  if (j.is_array()) return "list";
  if (j.is_number()) return "number";
  return j.type_name();
}

std::string FileStem(const std::string& path) {
  std::string base = path;
  const size_t slash = base.find_last_of('/');
  if (slash != std::string::npos) base = base.substr(slash + 1);
  const size_t dot = base.find('.');
  if (dot != std::string::npos && dot > 0) base = base.substr(0, dot);
  return base;
}

bool HasNpyExtension(absl::string_view path) {
  return path.size() >= 4 && absl::EqualsIgnoreCase(path.substr(path.size() - 4), ".npy");
}

// Lexically normalises a relative path, refusing escapes. Returns the cleaned path.
absl::StatusOr<std::string> CleanRelative(const std::string& relative, const std::string& what) {
  if (relative.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": path is empty"));
  }
  if (relative.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": path contains a NUL byte"));
  }
  if (relative[0] == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", Quote(relative),
                     ": absolute paths are refused; paths must be relative to the image root"));
  }
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(relative, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", Quote(relative),
                       ": '..' is refused; the path must stay under the image root"));
    }
    parts.emplace_back(part);
  }
  if (parts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", Quote(relative), ": path names no file"));
  }
  return absl::StrJoin(parts, "/");
}

absl::StatusOr<std::string> RealPath(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) == nullptr) {
    return absl::NotFoundError(absl::StrCat(Quote(path), ": ", std::strerror(errno)));
  }
  return std::string(buf);
}

bool IsUnder(const std::string& real, const std::string& root_real) {
  if (root_real == "/") return true;
  return real == root_real || (absl::StartsWith(real, root_real) &&
                               real.size() > root_real.size() && real[root_real.size()] == '/');
}

// Resolves image paths under one root, caching the outcome per relative path.
class Confiner {
 public:
  static absl::StatusOr<Confiner> Create(const std::string& root, const std::string& what) {
    if (root.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is not set"));
    }
    struct stat st;
    if (stat(root.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat(what, " ", Quote(root), ": ", std::strerror(errno)));
    }
    if (!S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(what, " ", Quote(root), ": not a directory"));
    }
    Confiner c;
    c.root_ = root;
    while (c.root_.size() > 1 && c.root_.back() == '/') c.root_.pop_back();
    EQSIM_ASSIGN_OR_RETURN(c.root_real_, RealPath(c.root_));
    return c;
  }

  // Resolves `relative`; InvalidArgument on escape.
  absl::StatusOr<std::string> Resolve(const std::string& relative, const std::string& what) const {
    EQSIM_ASSIGN_OR_RETURN(std::string clean, CleanRelative(relative, what));
    std::string joined = root_ == "/" ? "/" + clean : absl::StrCat(root_, "/", clean);
    // The deepest existing ancestor (or the file itself) must resolve under the root.
    std::string probe = joined;
    while (true) {
      struct stat st;
      if (lstat(probe.c_str(), &st) == 0) break;
      const size_t slash = probe.find_last_of('/');
      if (slash == std::string::npos || probe.size() <= root_.size()) {
        probe = root_;
        break;
      }
      probe = probe.substr(0, slash);
    }
    auto real = RealPath(probe);
    if (!real.ok()) {
      // A dangling symlink: refuse (its target is unknown).
      return absl::InvalidArgumentError(absl::StrCat(
          what, " ", Quote(relative), ": cannot be resolved (", real.status().message(), ")"));
    }
    if (!IsUnder(*real, root_real_)) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " ", Quote(relative), ": resolves outside the image root (through a symlink to ",
          Quote(*real), ")"));
    }
    return joined;
  }

 private:
  std::string root_;
  std::string root_real_;
};

// Error helpers: "<file>: entry 12 (video 'abc'): field 'caption1': expected ..."
struct Ctx {
  const std::string* file;
  int64_t entry;
  std::string locator;  // "video 'abc'" or ""

  std::string Prefix() const {
    if (locator.empty()) return absl::StrCat(*file, ": entry ", entry);
    return absl::StrCat(*file, ": entry ", entry, " (", locator, ")");
  }
  absl::Status Error(absl::string_view msg) const {
    return absl::InvalidArgumentError(absl::StrCat(Prefix(), ": ", msg));
  }
  absl::Status FieldError(absl::string_view field, absl::string_view msg) const {
    return Error(absl::StrCat("field '", field, "': ", msg));
  }
};

absl::StatusOr<const Json*> Field(const Json& obj, const char* field, const Ctx& ctx) {
  if (!obj.is_object()) {
    return ctx.Error(absl::StrCat("expected an object, got ", TypeName(obj)));
  }
  auto it = obj.find(field);
  if (it == obj.end()) return ctx.FieldError(field, "missing");
  return &*it;
}

absl::StatusOr<std::string> StringField(const Json& obj, const char* field, const Ctx& ctx) {
  EQSIM_ASSIGN_OR_RETURN(const Json* v, Field(obj, field, ctx));
  if (!v->is_string()) {
    return ctx.FieldError(field, absl::StrCat("expected a string, got ", TypeName(*v)));
  }
  return v->get<std::string>();
}

// EqBen AG captions: a non-empty list whose first element is a string (a plain string is
// accepted too).
absl::StatusOr<std::string> FirstStringField(const Json& obj, const char* field, const Ctx& ctx) {
  EQSIM_ASSIGN_OR_RETURN(const Json* v, Field(obj, field, ctx));
  if (v->is_string()) return v->get<std::string>();
  if (!v->is_array()) {
    return ctx.FieldError(field, absl::StrCat("expected a list of strings, got ", TypeName(*v)));
  }
  if (v->empty()) return ctx.FieldError(field, "expected a list of strings, got an empty list");
  if (!(*v)[0].is_string()) {
    return ctx.FieldError(
        field, absl::StrCat("expected a list of strings, element 0 is ", TypeName((*v)[0])));
  }
  return (*v)[0].get<std::string>();
}

std::string IdString(const Json& id) {
  if (id.is_string()) return id.get<std::string>();
  return id.dump();
}

class Builder {
 public:
  Builder(BenchmarkFormat format, const std::string& name, const ReadOptions& options)
      : options_(options) {
    bench_.format = format;
    bench_.kind = SampleKindOf(format);
    bench_.annotation_path = name;
    for (const auto& s : options.subsets) wanted_.insert(s);
  }

  // True when an entry of `subset` should be read (subset filter and per-subset limit);
  // counts the entry either way.
  bool Want(const std::string& subset) {
    ++bench_.entries_in_file;
    if (!wanted_.empty() && !wanted_.contains(subset)) {
      ++bench_.filtered_out;
      return false;
    }
    int64_t& n = per_subset_[subset];
    if (options_.limit > 0 && n >= options_.limit) {
      ++bench_.filtered_out;
      return false;
    }
    ++n;
    return true;
  }
  void CountFiltered() {
    ++bench_.entries_in_file;
    ++bench_.filtered_out;
  }

  // Resolves one image; a missing file sets sample->skip_reason.
  absl::Status AddImage(const Confiner& confiner, const std::string& rel, const char* role,
                        const Ctx& ctx, Sample* sample) {
    ImageRef ref;
    ref.annotation = rel;
    ref.is_npy_bgr = HasNpyExtension(rel);
    auto resolved = confiner.Resolve(rel, absl::StrCat("field '", role, "'"));
    if (!resolved.ok()) return ctx.Error(resolved.status().message());
    ref.path = *std::move(resolved);
    if (options_.check_images && sample->skip_reason.empty()) {
      std::string reason = CheckExists(ref.path);
      if (!reason.empty()) sample->skip_reason = absl::StrCat(role, " ", Quote(rel), ": ", reason);
    }
    sample->images.push_back(std::move(ref));
    return absl::OkStatus();
  }

  void Add(Sample s) {
    if (!seen_subsets_.contains(s.subset)) {
      seen_subsets_.insert(s.subset);
      bench_.subsets.push_back(s.subset);
    }
    bench_.samples.push_back(std::move(s));
  }

  absl::StatusOr<Benchmark> Finish() {
    if (bench_.samples.empty() && !options_.subsets.empty() && bench_.entries_in_file > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(bench_.annotation_path, ": no entry belongs to the requested subsets (",
                       absl::StrJoin(options_.subsets, ", "), ")"));
    }
    return std::move(bench_);
  }

 private:
  std::string CheckExists(const std::string& path) {
    auto it = exists_cache_.find(path);
    if (it != exists_cache_.end()) return it->second;
    std::string reason;
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
      reason = errno == ENOENT ? "file not found" : std::strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
      reason = "not a regular file";
    }
    exists_cache_.emplace(path, reason);
    return reason;
  }

  const ReadOptions& options_;
  Benchmark bench_;
  absl::flat_hash_set<std::string> wanted_;
  absl::flat_hash_map<std::string, int64_t> per_subset_;
  absl::flat_hash_set<std::string> seen_subsets_;
  absl::flat_hash_map<std::string, std::string> exists_cache_;
};

absl::StatusOr<Json> ParseJson(std::string_view content, const std::string& name) {
  Json j = Json::parse(content.begin(), content.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Re-parse with exceptions for the parser's position message.
    try {
      Json unused = Json::parse(content.begin(), content.end());
      (void)unused;
    } catch (const nlohmann::json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": not valid JSON: ", e.what()));
    }
    return absl::InvalidArgumentError(absl::StrCat(name, ": not valid JSON"));
  }
  return j;
}

// {image0, image1, caption0, caption1} (captions: strings, or AG lists).
absl::Status ReadPairObject(const Json& obj, const Confiner& confiner, bool caption_lists,
                            const Ctx& ctx, Builder* builder, Sample* s) {
  if (!obj.is_object()) {
    return ctx.Error(absl::StrCat("expected an object {image0, image1, caption0, caption1}, got ",
                                  TypeName(obj)));
  }
  EQSIM_ASSIGN_OR_RETURN(std::string image0, StringField(obj, "image0", ctx));
  EQSIM_ASSIGN_OR_RETURN(std::string image1, StringField(obj, "image1", ctx));
  std::string c0, c1;
  if (caption_lists) {
    EQSIM_ASSIGN_OR_RETURN(c0, FirstStringField(obj, "caption0", ctx));
    EQSIM_ASSIGN_OR_RETURN(c1, FirstStringField(obj, "caption1", ctx));
  } else {
    EQSIM_ASSIGN_OR_RETURN(c0, StringField(obj, "caption0", ctx));
    EQSIM_ASSIGN_OR_RETURN(c1, StringField(obj, "caption1", ctx));
  }
  EQSIM_RETURN_IF_ERROR(builder->AddImage(confiner, image0, "image0", ctx, s));
  EQSIM_RETURN_IF_ERROR(builder->AddImage(confiner, image1, "image1", ctx, s));
  s->captions = {std::move(c0), std::move(c1)};
  return absl::OkStatus();
}

absl::StatusOr<Benchmark> ReadWinoground(std::string_view content, const std::string& name,
                                         const ReadOptions& options) {
  EQSIM_ASSIGN_OR_RETURN(Confiner confiner, Confiner::Create(options.image_root, "image root"));
  Builder b(BenchmarkFormat::kWinoground, name, options);
  int64_t entry = 0;
  int64_t line_no = 0;
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(content.data(), content.size()), '\n')) {
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    Ctx ctx{&name, entry, absl::StrCat("line ", line_no)};
    auto parsed = ParseJson(std::string_view(line.data(), line.size()),
                            absl::StrCat(name, ": line ", line_no));
    if (!parsed.ok()) return parsed.status();
    const Json& obj = *parsed;
    if (!obj.is_object()) return ctx.Error(absl::StrCat("expected an object, got ", TypeName(obj)));
    if (obj.contains("id"))
      ctx.locator = absl::StrCat("line ", line_no, ", id ", IdString(obj["id"]));
    std::string subset = "all";
    if (auto it = obj.find("collapsed_tag"); it != obj.end() && !it->is_null()) {
      if (!it->is_string()) {
        return ctx.FieldError("collapsed_tag",
                              absl::StrCat("expected a string, got ", TypeName(*it)));
      }
      subset = it->get<std::string>();
    }
    const int64_t this_entry = entry++;
    if (!b.Want(subset)) continue;
    Sample s;
    s.subset = subset;
    s.index = this_entry;
    s.key = ctx.locator;
    EQSIM_ASSIGN_OR_RETURN(std::string c0, StringField(obj, "caption_0", ctx));
    EQSIM_ASSIGN_OR_RETURN(std::string c1, StringField(obj, "caption_1", ctx));
    EQSIM_ASSIGN_OR_RETURN(std::string i0, StringField(obj, "image_0", ctx));
    EQSIM_ASSIGN_OR_RETURN(std::string i1, StringField(obj, "image_1", ctx));
    EQSIM_RETURN_IF_ERROR(b.AddImage(confiner, i0 + ".png", "image_0", ctx, &s));
    EQSIM_RETURN_IF_ERROR(b.AddImage(confiner, i1 + ".png", "image_1", ctx, &s));
    s.captions = {std::move(c0), std::move(c1)};
    b.Add(std::move(s));
  }
  return b.Finish();
}

absl::StatusOr<Benchmark> ReadEqbenPairs(const Json& root, const std::string& name,
                                         const ReadOptions& options) {
  if (!root.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected a JSON list of {image0, image1, caption0, caption1}, got ",
                     TypeName(root)));
  }
  EQSIM_ASSIGN_OR_RETURN(Confiner confiner, Confiner::Create(options.image_root, "image root"));
  Builder b(BenchmarkFormat::kEqbenPairs, name, options);
  const std::string subset = options.subset_name.empty() ? FileStem(name) : options.subset_name;
  for (size_t i = 0; i < root.size(); ++i) {
    if (!b.Want(subset)) continue;
    Ctx ctx{&name, static_cast<int64_t>(i), ""};
    Sample s;
    s.subset = subset;
    s.index = static_cast<int64_t>(i);
    s.key = absl::StrCat("entry ", i);
    EQSIM_RETURN_IF_ERROR(ReadPairObject(root[i], confiner, false, ctx, &b, &s));
    b.Add(std::move(s));
  }
  return b.Finish();
}

absl::StatusOr<Benchmark> ReadEqbenVideo(const Json& root, const std::string& name,
                                         const ReadOptions& options, bool ag) {
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected a JSON object mapping video ids to ",
                     ag ? "subject maps" : "lists of pairs", ", got ", TypeName(root)));
  }
  EQSIM_ASSIGN_OR_RETURN(Confiner confiner, Confiner::Create(options.image_root, "image root"));
  Builder b(ag ? BenchmarkFormat::kEqbenAg : BenchmarkFormat::kEqbenVideo, name, options);
  const std::string subset = options.subset_name.empty() ? FileStem(name) : options.subset_name;
  int64_t entry = 0;
  auto read_list = [&](const Json& list, const std::string& locator) -> absl::Status {
    if (!list.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": ", locator, ": expected a list of pair objects, got ", TypeName(list)));
    }
    for (size_t k = 0; k < list.size(); ++k) {
      const int64_t this_entry = entry++;
      if (!b.Want(subset)) continue;
      Ctx ctx{&name, this_entry, absl::StrCat(locator, ", item ", k)};
      Sample s;
      s.subset = subset;
      s.index = this_entry;
      s.key = ctx.locator;
      EQSIM_RETURN_IF_ERROR(ReadPairObject(list[k], confiner, ag, ctx, &b, &s));
      b.Add(std::move(s));
    }
    return absl::OkStatus();
  };
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string video_loc = absl::StrCat("video ", Quote(it.key()));
    if (!ag) {
      EQSIM_RETURN_IF_ERROR(read_list(it.value(), video_loc));
      continue;
    }
    if (!it.value().is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": ", video_loc, ": expected an object mapping subject ids to lists, got ",
          TypeName(it.value())));
    }
    for (auto sub = it.value().begin(); sub != it.value().end(); ++sub) {
      EQSIM_RETURN_IF_ERROR(
          read_list(sub.value(), absl::StrCat(video_loc, ", subject ", Quote(sub.key()))));
    }
  }
  return b.Finish();
}

absl::StatusOr<Benchmark> ReadLeaderboard(const Json& root, const std::string& name,
                                          const ReadOptions& options) {
  if (!root.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected a JSON list of {image, caption}, got ", TypeName(root)));
  }
  EQSIM_ASSIGN_OR_RETURN(Confiner confiner, Confiner::Create(options.image_root, "image root"));
  Builder b(BenchmarkFormat::kEqbenLeaderboard, name, options);
  for (size_t i = 0; i < root.size(); ++i) {
    Ctx ctx{&name, static_cast<int64_t>(i), ""};
    const Json& obj = root[i];
    if (!obj.is_object()) {
      return ctx.Error(absl::StrCat("expected an object {image, caption}, got ", TypeName(obj)));
    }
    EQSIM_ASSIGN_OR_RETURN(std::string image, StringField(obj, "image", ctx));
    EQSIM_ASSIGN_OR_RETURN(std::string caption, StringField(obj, "caption", ctx));
    absl::string_view rel = image;
    while (!rel.empty() && rel[0] == '.' && rel.size() > 1 && rel[1] == '/') rel.remove_prefix(2);
    const size_t slash = rel.find('/');
    std::string subset =
        slash == absl::string_view::npos ? "all" : std::string(rel.substr(0, slash));
    if (!b.Want(subset)) continue;
    Sample s;
    s.subset = subset;
    s.index = static_cast<int64_t>(i);
    s.key = absl::StrCat("entry ", i);
    EQSIM_RETURN_IF_ERROR(b.AddImage(confiner, image, "image", ctx, &s));
    s.captions = {std::move(caption)};
    b.Add(std::move(s));
  }
  return b.Finish();
}

absl::StatusOr<Benchmark> ReadValse(const Json& root, const std::string& name,
                                    const ReadOptions& options) {
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": expected a JSON object mapping ids to VALSE entries, got ", TypeName(root)));
  }
  absl::flat_hash_map<std::string, Confiner> confiners;
  std::optional<Confiner> default_confiner;
  if (!options.image_root.empty()) {
    EQSIM_ASSIGN_OR_RETURN(Confiner c, Confiner::Create(options.image_root, "image root"));
    default_confiner = std::move(c);
  }
  for (const auto& [dataset, dir] : options.image_roots) {
    EQSIM_ASSIGN_OR_RETURN(
        Confiner c,
        Confiner::Create(dir, absl::StrCat("image root of VALSE source ", Quote(dataset))));
    confiners.emplace(dataset, std::move(c));
  }
  Builder b(BenchmarkFormat::kValse, name, options);
  int64_t i = 0;
  for (auto it = root.begin(); it != root.end(); ++it, ++i) {
    Ctx ctx{&name, i, absl::StrCat("id ", Quote(it.key()))};
    const Json& obj = it.value();
    if (!obj.is_object()) return ctx.Error(absl::StrCat("expected an object, got ", TypeName(obj)));
    EQSIM_ASSIGN_OR_RETURN(std::string subset, StringField(obj, "linguistic_phenomena", ctx));
    if (!options.valse_all) {
      auto mt = obj.find("mturk");
      if (mt == obj.end() || mt->is_null()) {
        return ctx.FieldError("mturk",
                              "missing (the validity filter mturk.caption >= 2 needs it; "
                              "score every entry with valse_all / --valse-all)");
      }
      if (!mt->is_object()) {
        return ctx.FieldError("mturk", absl::StrCat("expected an object, got ", TypeName(*mt)));
      }
      auto cap = mt->find("caption");
      if (cap == mt->end() || !cap->is_number()) {
        return ctx.FieldError("mturk.caption",
                              cap == mt->end()
                                  ? std::string("missing")
                                  : absl::StrCat("expected a number, got ", TypeName(*cap)));
      }
      if (cap->get<double>() < 2) {
        b.CountFiltered();
        continue;
      }
    }
    if (!b.Want(subset)) continue;
    EQSIM_ASSIGN_OR_RETURN(std::string dataset, StringField(obj, "dataset", ctx));
    EQSIM_ASSIGN_OR_RETURN(std::string image_file, StringField(obj, "image_file", ctx));
    EQSIM_ASSIGN_OR_RETURN(std::string caption, StringField(obj, "caption", ctx));
    EQSIM_ASSIGN_OR_RETURN(std::string foil, StringField(obj, "foil", ctx));
    const Confiner* confiner = nullptr;
    if (auto c = confiners.find(dataset); c != confiners.end()) {
      confiner = &c->second;
    } else if (default_confiner.has_value()) {
      confiner = &*default_confiner;
    } else {
      return ctx.FieldError("dataset",
                            absl::StrCat("no image root for source dataset ", Quote(dataset),
                                         " (give image_roots / --valse-root ", dataset,
                                         "=DIR, or an image root for all sources)"));
    }
    Sample s;
    s.subset = subset;
    s.index = i;
    s.key = ctx.locator;
    EQSIM_RETURN_IF_ERROR(b.AddImage(*confiner, image_file, "image_file", ctx, &s));
    s.captions = {std::move(caption), std::move(foil)};
    b.Add(std::move(s));
  }
  return b.Finish();
}

}  // namespace

absl::StatusOr<BenchmarkFormat> ParseBenchmarkFormat(std::string_view name) {
  std::string n = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  for (char& c : n) {
    if (c == '_') c = '-';
  }
  for (const auto& f : kFormatNames) {
    if (n == f.name) return f.format;
  }
  std::vector<std::string> names;
  for (const auto& f : kFormatNames) names.push_back(f.name);
  return absl::InvalidArgumentError(absl::StrCat("unknown benchmark format ",
                                                 Quote(std::string(name)), "; expected one of ",
                                                 absl::StrJoin(names, ", ")));
}

std::string BenchmarkFormatName(BenchmarkFormat format) {
  for (const auto& f : kFormatNames) {
    if (f.format == format) return f.name;
  }
  return "unspecified";
}

SampleKind SampleKindOf(BenchmarkFormat format) {
  switch (format) {
    case BenchmarkFormat::kEqbenLeaderboard:
      return SampleKind::kSingle;
    case BenchmarkFormat::kValse:
      return SampleKind::kCaptionFoil;
    default:
      return SampleKind::kPair;
  }
}

int ScoresPerSample(SampleKind kind) {
  switch (kind) {
    case SampleKind::kPair:
      return 4;
    case SampleKind::kCaptionFoil:
      return 2;
    case SampleKind::kSingle:
      return 1;
  }
  return 4;
}

absl::StatusOr<std::string> ReadFileBytes(const std::string& path, int64_t max_bytes) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    const int err = errno;
    std::string msg = absl::StrCat(Quote(path), ": ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(msg);
    return absl::InvalidArgumentError(msg);
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(Quote(path), ": is a directory"));
  }
  if (st.st_size > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(Quote(path), ": ", st.st_size, " bytes, over the limit of ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(Quote(path), ": cannot be opened"));
  }
  std::string data;
  data.resize(static_cast<size_t>(st.st_size));
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (in.gcount() != static_cast<std::streamsize>(data.size())) {
    return absl::InvalidArgumentError(absl::StrCat(Quote(path), ": short read"));
  }
  return data;
}

absl::StatusOr<std::string> ResolveConfinedPath(const std::string& root,
                                                const std::string& relative,
                                                const std::string& what) {
  EQSIM_ASSIGN_OR_RETURN(Confiner c, Confiner::Create(root, "root"));
  return c.Resolve(relative, what);
}

absl::StatusOr<std::string> LoadImageBytes(const ImageRef& image, int64_t max_bytes) {
  if (!image.is_npy_bgr) return ReadFileBytes(image.path, max_bytes);
  EQSIM_ASSIGN_OR_RETURN(std::string npy, ReadFileBytes(image.path, max_bytes));
  EQSIM_ASSIGN_OR_RETURN(cv::Mat rgb, NpyFrameRgbFromBytes(npy, image.path));
  std::string png = EncodePng(rgb);
  if (png.empty()) {
    return absl::InternalError(absl::StrCat(Quote(image.path), ": PNG encoding failed"));
  }
  return png;
}

absl::StatusOr<Benchmark> ParseBenchmark(BenchmarkFormat format, std::string_view content,
                                         const std::string& name, const ReadOptions& options) {
  if (options.limit < 0) {
    return absl::InvalidArgumentError(absl::StrCat("limit must be >= 0, got ", options.limit));
  }
  if (format == BenchmarkFormat::kWinoground) return ReadWinoground(content, name, options);
  if (format == BenchmarkFormat::kUnspecified) {
    return absl::InvalidArgumentError("benchmark format is not specified");
  }
  EQSIM_ASSIGN_OR_RETURN(Json root, ParseJson(content, name));
  switch (format) {
    case BenchmarkFormat::kEqbenPairs:
      return ReadEqbenPairs(root, name, options);
    case BenchmarkFormat::kEqbenVideo:
      return ReadEqbenVideo(root, name, options, /*ag=*/false);
    case BenchmarkFormat::kEqbenAg:
      return ReadEqbenVideo(root, name, options, /*ag=*/true);
    case BenchmarkFormat::kEqbenLeaderboard:
      return ReadLeaderboard(root, name, options);
    case BenchmarkFormat::kValse:
      return ReadValse(root, name, options);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported benchmark format ", static_cast<int>(format)));
  }
}

absl::StatusOr<Benchmark> ReadBenchmark(BenchmarkFormat format, const std::string& annotation_path,
                                        const ReadOptions& options) {
  auto content = ReadFileBytes(annotation_path, options.max_annotation_bytes);
  if (!content.ok()) {
    return absl::Status(content.status().code(),
                        absl::StrCat("annotation file ", content.status().message()));
  }
  return ParseBenchmark(format, *content, annotation_path, options);
}

}  // namespace eqsim
