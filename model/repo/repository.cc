#include "model/repo/repository.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "model/core/status_macros.h"
#include "model/nn/encoder_factory.h"
#include "opencv2/core.hpp"

namespace eqsim {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kMaxConfigBytes = 1 << 20;

class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  explicit CollectErrors(std::string where) : where_(std::move(where)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    errors_.push_back(absl::StrCat(where_, ":", line + 1, ":", column + 1, ": ", message));
  }
  void AddWarning(int line, google::protobuf::io::ColumnNumber column,
                  const std::string& message) override {
    std::cerr << where_ << ":" << line + 1 << ":" << column + 1 << ": warning: " << message
              << "\n";
  }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::string where_;
  std::vector<std::string> errors_;
};

// A model name is a folder name: letters, digits, '_', '-', '.', not starting with '.'.
absl::Status ValidateName(const std::string& name, const std::string& where) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": name is empty"));
  if (name.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": name is ", name.size(), " characters, over the limit of 128"));
  }
  if (name[0] == '.') {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": name '", name, "' must not start with '.'"));
  }
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ||
          c == '.')) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: name '%s' has the character '%c'; only letters, digits, '_', '-' and '.' are "
          "allowed",
          where, name, c));
    }
  }
  return absl::OkStatus();
}

// A version folder name: decimal, no sign, no leading zero, fits int64.
bool ParseVersionName(const std::string& s, int64_t* v) {
  if (s.empty() || s.size() > 18 || s[0] == '0') return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return absl::SimpleAtoi(s, v) && *v > 0;
}

bool IsDir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}
bool IsFile(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Config files

absl::StatusOr<config::ModelConfig> ParseModelConfig(const std::string& text,
                                                     const std::string& where) {
  config::ModelConfig cfg;
  CollectErrors errors(where);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &cfg)) {
    if (errors.errors().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": cannot parse the config"));
    }
    return absl::InvalidArgumentError(absl::StrJoin(errors.errors(), "\n"));
  }
  return cfg;
}

absl::StatusOr<config::ModelConfig> ReadModelConfig(const std::string& path) {
  std::error_code ec;
  if (IsDir(path)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, not a config file"));
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat(path, ": cannot open (missing or unreadable)"));
  const auto size = fs::file_size(path, ec);
  if (!ec && static_cast<int64_t>(size) > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is ", size,
                                                   " bytes, over the limit of ", kMaxConfigBytes));
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return ParseModelConfig(ss.str(), path);
}

absl::Status WriteModelConfig(const config::ModelConfig& cfg, const std::string& path) {
  std::string text;
  google::protobuf::TextFormat::Printer printer;
  if (!printer.PrintToString(cfg, &text)) {
    return absl::InternalError(absl::StrCat(path, ": cannot print the config"));
  }
  std::error_code ec;
  fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path(), ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat(p.parent_path().string(), ": cannot create folder: ", ec.message()));
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot open for writing"));
    f << text;
    if (!f) return absl::DataLossError(absl::StrCat(tmp, ": write failed"));
  }
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": rename failed: ", ec.message()));
  return absl::OkStatus();
}

absl::Status ValidateModelConfig(const config::ModelConfig& cfg, const std::string& where,
                                 const std::string& expected_name) {
  auto err = [&](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", msg));
  };
  EQSIM_RETURN_IF_ERROR(ValidateName(cfg.name(), where));
  if (!expected_name.empty() && cfg.name() != expected_name) {
    return err(absl::StrCat("name '", cfg.name(), "' does not match its folder '", expected_name,
                            "'"));
  }
  if (cfg.backend() != config::ModelConfig::NATIVE &&
      cfg.backend() != config::ModelConfig::TORCHSCRIPT) {
    return err(cfg.backend() == config::ModelConfig::BACKEND_UNSPECIFIED
                   ? "backend is not set (NATIVE or TORCHSCRIPT)"
                   : absl::StrCat("backend has the unknown value ", cfg.backend()));
  }
  if (cfg.embed_dim() <= 0 || cfg.embed_dim() > 65536) {
    return err(absl::StrCat("embed_dim must be in [1, 65536], got ", cfg.embed_dim()));
  }
  // image
  {
    auto pre = ImagePreprocessor::Create(cfg.image());
    if (!pre.ok()) return err(std::string(pre.status().message()));
  }
  // tokenizer
  const auto& tok = cfg.tokenizer();
  if (tok.kind() != config::TokenizerConfig::CLIP_BPE &&
      tok.kind() != config::TokenizerConfig::WORD) {
    return err(tok.kind() == config::TokenizerConfig::KIND_UNSPECIFIED
                   ? "tokenizer.kind is not set (CLIP_BPE or WORD)"
                   : absl::StrCat("tokenizer.kind has the unknown value ", tok.kind()));
  }
  if (tok.vocab_file().empty()) {
    return err(tok.kind() == config::TokenizerConfig::WORD
                   ? "tokenizer.vocab_file is empty (the word list, e.g. \"vocab.txt\")"
                   : "tokenizer.vocab_file is empty (the BPE merges, e.g. "
                     "\"bpe_simple_vocab_16e6.txt.gz\")");
  }
  if (tok.context_length() < 0 || tok.context_length() > 4096) {
    return err(absl::StrCat("tokenizer.context_length must be 0 (default) or in [2, 4096], got ",
                            tok.context_length()));
  }
  // native
  if (cfg.backend() == config::ModelConfig::NATIVE) {
    const auto& n = cfg.native();
    const std::pair<const char*, int> fields[] = {
        {"image_width", n.image_width()}, {"image_stages", n.image_stages()},
        {"image_blocks", n.image_blocks()}, {"image_pool_grid", n.image_pool_grid()},
        {"image_stem_stride", n.image_stem_stride()},
        {"text_width", n.text_width()},   {"text_layers", n.text_layers()},
        {"text_heads", n.text_heads()},   {"vocab_size", n.vocab_size()},
        {"embed_dim", n.embed_dim()}};
    for (const auto& [field, value] : fields) {
      if (value < 0) return err(absl::StrCat("native.", field, " must be >= 0, got ", value));
    }
    if (n.embed_dim() != 0 && n.embed_dim() != cfg.embed_dim()) {
      return err(absl::StrCat("native.embed_dim ", n.embed_dim(), " differs from embed_dim ",
                              cfg.embed_dim()));
    }
    const int width = n.text_width() ? n.text_width() : 128;
    const int heads = n.text_heads() ? n.text_heads() : 4;
    if (width % heads != 0) {
      return err(absl::StrCat("native.text_heads ", heads, " does not divide native.text_width ",
                              width));
    }
    if (!std::isfinite(n.init_logit_scale())) return err("native.init_logit_scale is not finite");
  }
  // torchscript
  if (cfg.backend() == config::ModelConfig::TORCHSCRIPT) {
    const std::string& file = cfg.torchscript().file();
    if (!file.empty()) {
      fs::path p(file);
      if (p.is_absolute() || file.find("..") != std::string::npos) {
        return err(absl::StrCat("torchscript.file '", file,
                                "' must be a relative path inside the version folder"));
      }
    }
  }
  if (!config::ModelConfig::Device_IsValid(cfg.device())) {
    return err(absl::StrCat("device has the unknown value ", cfg.device()));
  }
  // batching
  const auto& b = cfg.batching();
  if (b.max_batch_size() < 0 || b.max_batch_size() > 65536) {
    return err(absl::StrCat("batching.max_batch_size must be in [0, 65536] (0 = default 32), got ",
                            b.max_batch_size()));
  }
  if (b.max_queue_delay_us() < 0 || b.max_queue_delay_us() > 10'000'000) {
    return err(absl::StrCat(
        "batching.max_queue_delay_us must be in [0, 10000000] (0 = default 2000), got ",
        b.max_queue_delay_us()));
  }
  if (b.max_queue_size() < 0) {
    return err(absl::StrCat("batching.max_queue_size must be >= 0 (0 = default 1024), got ",
                            b.max_queue_size()));
  }
  // version policy
  if (cfg.latest() < 0) return err(absl::StrCat("latest must be >= 0, got ", cfg.latest()));
  if (cfg.latest() > 0 && cfg.versions_size() > 0) {
    return err("latest and versions are mutually exclusive");
  }
  std::set<int64_t> seen;
  for (int i = 0; i < cfg.versions_size(); ++i) {
    if (cfg.versions(i) <= 0) {
      return err(absl::StrCat("versions[", i, "] must be > 0, got ", cfg.versions(i)));
    }
    if (!seen.insert(cfg.versions(i)).second) {
      return err(absl::StrCat("versions[", i, "] repeats version ", cfg.versions(i)));
    }
  }
  return absl::OkStatus();
}

config::ModelConfig WithDefaults(const config::ModelConfig& in) {
  config::ModelConfig cfg = in;
  auto* img = cfg.mutable_image();
  if (img->recipe() == config::ImagePreprocess::RECIPE_UNSPECIFIED) {
    img->set_recipe(config::ImagePreprocess::NATIVE);
  }
  if (img->size() == 0) img->set_size(img->recipe() == config::ImagePreprocess::CLIP ? 224 : 64);
  auto* tok = cfg.mutable_tokenizer();
  if (tok->context_length() == 0) {
    tok->set_context_length(tok->kind() == config::TokenizerConfig::CLIP_BPE ? 77 : 16);
  }
  if (cfg.backend() == config::ModelConfig::NATIVE) {
    auto* n = cfg.mutable_native();
    if (n->image_width() == 0) n->set_image_width(32);
    if (n->image_stages() == 0) n->set_image_stages(3);
    if (n->image_blocks() == 0) n->set_image_blocks(1);
    if (n->image_pool_grid() == 0) n->set_image_pool_grid(2);
    if (n->image_stem_stride() == 0) n->set_image_stem_stride(2);
    if (n->text_width() == 0) n->set_text_width(128);
    if (n->text_layers() == 0) n->set_text_layers(2);
    if (n->text_heads() == 0) n->set_text_heads(4);
    if (n->embed_dim() == 0) n->set_embed_dim(cfg.embed_dim());
    if (n->init_logit_scale() == 0.f) n->set_init_logit_scale(std::log(1.0f / 0.07f));
  }
  if (cfg.backend() == config::ModelConfig::TORCHSCRIPT && cfg.torchscript().file().empty()) {
    cfg.mutable_torchscript()->set_file(kDefaultTorchScriptFileName);
  }
  auto* b = cfg.mutable_batching();
  if (b->max_batch_size() == 0) b->set_max_batch_size(32);
  if (b->max_queue_delay_us() == 0) b->set_max_queue_delay_us(2000);
  if (b->max_queue_size() == 0) b->set_max_queue_size(1024);
  if (cfg.latest() == 0 && cfg.versions_size() == 0) cfg.set_latest(1);
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// Listing

absl::StatusOr<std::vector<std::string>> ListModelNames(const std::string& repo) {
  if (!IsDir(repo)) {
    return absl::NotFoundError(absl::StrCat("model repository ", repo, " is not a directory"));
  }
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(repo, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n.empty() || n[0] == '.') continue;
    if (IsDir(it->path()) && IsFile(it->path() / kConfigFileName)) names.push_back(n);
  }
  if (ec) return absl::InternalError(absl::StrCat(repo, ": cannot list: ", ec.message()));
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<std::vector<int64_t>> ListVersions(const std::string& model_dir) {
  if (!IsDir(model_dir)) {
    return absl::NotFoundError(absl::StrCat("model folder ", model_dir, " is not a directory"));
  }
  std::vector<int64_t> versions;
  std::error_code ec;
  for (fs::directory_iterator it(model_dir, ec), end; !ec && it != end; it.increment(ec)) {
    int64_t v = 0;
    if (ParseVersionName(it->path().filename().string(), &v) && IsDir(it->path())) {
      versions.push_back(v);
    }
  }
  if (ec) return absl::InternalError(absl::StrCat(model_dir, ": cannot list: ", ec.message()));
  std::sort(versions.begin(), versions.end());
  return versions;
}

std::vector<int64_t> SelectVersions(const config::ModelConfig& cfg,
                                     const std::vector<int64_t>& available_in) {
  std::vector<int64_t> available = available_in;
  std::sort(available.begin(), available.end());
  available.erase(std::unique(available.begin(), available.end()), available.end());
  std::vector<int64_t> out;
  if (cfg.versions_size() > 0) {
    for (int64_t v : available) {
      if (std::find(cfg.versions().begin(), cfg.versions().end(), v) != cfg.versions().end()) {
        out.push_back(v);
      }
    }
    return out;
  }
  const size_t latest = cfg.latest() > 0 ? static_cast<size_t>(cfg.latest()) : 1;
  const size_t start = available.size() > latest ? available.size() - latest : 0;
  out.assign(available.begin() + static_cast<std::ptrdiff_t>(start), available.end());
  return out;
}

std::vector<int64_t> MissingVersions(const config::ModelConfig& cfg,
                                     const std::vector<int64_t>& available) {
  std::vector<int64_t> out;
  for (int64_t v : cfg.versions()) {
    if (std::find(available.begin(), available.end(), v) == available.end()) out.push_back(v);
  }
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<int64_t> NextVersion(const std::string& model_dir) {
  if (!IsDir(model_dir)) {
    std::error_code ec;
    if (fs::exists(model_dir, ec)) {
      return absl::InvalidArgumentError(absl::StrCat(model_dir, " exists but is not a folder"));
    }
    return 1;
  }
  EQSIM_ASSIGN_OR_RETURN(std::vector<int64_t> versions, ListVersions(model_dir));
  return versions.empty() ? 1 : versions.back() + 1;
}

absl::StatusOr<config::ModelConfig> ReadVersionConfig(const std::string& model_dir,
                                                      const std::string& name,
                                                      int64_t version) {
  const fs::path override_path = fs::path(model_dir) / std::to_string(version) / kConfigFileName;
  const fs::path path =
      IsFile(override_path) ? override_path : fs::path(model_dir) / kConfigFileName;
  EQSIM_ASSIGN_OR_RETURN(config::ModelConfig cfg, ReadModelConfig(path.string()));
  EQSIM_RETURN_IF_ERROR(ValidateModelConfig(cfg, path.string(), name));
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// Loading

absl::Status SelfTestModel(const LoadedModel& m) {
  const std::string what = absl::StrCat("model ", m.name, " version ", m.version);
  const int size = m.preprocessor->size();
  ImageTensor img = m.preprocessor->FromRgb(cv::Mat(size, size, CV_8UC3, cv::Scalar(0, 0, 0)));
  ImageBatch images = StackImages({&img});
  auto check = [&](const absl::StatusOr<Matrix>& r, const char* kind) -> absl::Status {
    if (!r.ok()) {
      return Annotate(r.status(), absl::StrCat(what, ": self-test encode of one ", kind));
    }
    if (r->rows != 1 || r->cols != m.config.embed_dim()) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": config.pbtxt says embed_dim ", m.config.embed_dim(), " but the ", kind,
          " encoder returned [", r->rows, ", ", r->cols, "]"));
    }
    for (float v : r->data) {
      if (!std::isfinite(v)) {
        return absl::FailedPreconditionError(absl::StrCat(
            what, ": self-test encode of one ", kind, " produced non-finite values"));
      }
    }
    return absl::OkStatus();
  };
  EQSIM_RETURN_IF_ERROR(check(m.encoder->EncodeImages(images), "image"));
  auto ids = m.tokenizer->EncodeBatch({"a photo of a bag"});
  if (!ids.ok()) return Annotate(ids.status(), absl::StrCat(what, ": self-test tokenization"));
  return check(m.encoder->EncodeTexts(*ids), "text");
}

absl::StatusOr<std::shared_ptr<LoadedModel>> LoadModelVersion(const std::string& repo,
                                                              const std::string& name,
                                                              int64_t version,
                                                              const LoadOptions& opts) {
  if (!IsDir(repo)) {
    return absl::NotFoundError(absl::StrCat("model repository ", repo, " is not a directory"));
  }
  if (name.empty() || name[0] == '.' || name.find('/') != std::string::npos ||
      name.find('\\') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not a valid model name"));
  }
  const fs::path model_dir = fs::path(repo) / name;
  if (!IsDir(model_dir)) {
    return absl::NotFoundError(
        absl::StrCat("model '", name, "' not found in repository ", repo));
  }
  const std::string what = absl::StrCat("model ", name, " version ", version);
  if (!IsFile(model_dir / kConfigFileName)) {
    return absl::NotFoundError(
        absl::StrCat("model folder ", model_dir.string(), " has no ", kConfigFileName));
  }
  if (version <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": versions are positive integers"));
  }
  const fs::path version_dir = model_dir / std::to_string(version);
  if (!IsDir(version_dir)) {
    return absl::NotFoundError(absl::StrCat(what, ": version folder ", version_dir.string(),
                                            " does not exist"));
  }

  auto m = std::make_shared<LoadedModel>();
  m->name = name;
  m->version = version;
  m->dir = version_dir.string();
  {
    auto cfg = ReadVersionConfig(model_dir.string(), name, version);
    if (!cfg.ok()) return Annotate(cfg.status(), what);
    m->config = WithDefaults(*cfg);
  }
  if (opts.override_device) m->config.set_device(opts.device_override);

  std::vector<std::string> search = {version_dir.string(), model_dir.string()};
  search.insert(search.end(), opts.extra_search_dirs.begin(), opts.extra_search_dirs.end());
  {
    auto tok = CreateTokenizer(m->config.tokenizer(), search);
    if (!tok.ok()) return Annotate(tok.status(), absl::StrCat(what, ": tokenizer"));
    m->tokenizer = std::move(*tok);
  }
  {
    auto pre = ImagePreprocessor::Create(m->config.image(), opts.image_limits);
    if (!pre.ok()) return Annotate(pre.status(), absl::StrCat(what, ": image"));
    m->preprocessor = std::make_unique<ImagePreprocessor>(std::move(*pre));
  }
  {
    auto enc = CreateEncoder(m->config, m->dir, m->tokenizer->vocab_size(), opts.threads);
    if (!enc.ok()) return Annotate(enc.status(), what);
    m->encoder = std::move(*enc);
  }
  if (m->config.fp16() && m->encoder->device().find("fp16") == std::string::npos) {
    std::cerr << "eqsim: " << what << ": fp16 requested but the model runs on "
              << m->encoder->device() << " in float32 (half precision is CUDA only)\n";
  }
  if (m->encoder->dim() != m->config.embed_dim()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": config.pbtxt says embed_dim ", m->config.embed_dim(),
                     " but the encoder produces ", m->encoder->dim(), "-dimensional embeddings"));
  }

  if (opts.warmup) EQSIM_RETURN_IF_ERROR(SelfTestModel(*m));
  return m;
}

}  // namespace eqsim
