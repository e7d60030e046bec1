#include "model/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "model/bench/evaluator.h"
#include "model/bench/readers.h"
#include "model/core/status_macros.h"
#include "model/data/fashion_mnist.h"
#include "model/nn/losses.h"
#include "model/nn/native_model.h"
#include "model/repo/repository.h"
#include "model/text/word_tokenizer.h"
#include "model/train/batch_loader.h"
#include "nlohmann/json.hpp"

// OpenBLAS's thread control, when the BLAS in use is OpenBLAS (weak: absent otherwise).
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace eqsim {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string FirstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string FormatDuration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return absl::StrFormat("%dh%02dm", t / 3600, (t / 60) % 60);
  if (t >= 60) return absl::StrFormat("%dm%02ds", t / 60, t % 60);
  return absl::StrFormat("%ds", t);
}

std::string UtcNow() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

absl::Status WriteFileAtomic(const std::string& path, const std::string& content) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for writing"));
    f << content;
    if (!f) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": rename failed: ", ec.message()));
  return absl::OkStatus();
}

json EqSimJson(const EqSimOptions& s) {
  return json{{"text_side", s.text_side}, {"image_side", s.image_side},
              {"group_side", s.group_side}, {"v1", s.v1},
              {"weight", s.weight}, {"margin", s.margin},
              {"margin_v1", s.margin_v1}, {"prop", s.prop},
              {"sample_num", s.sample_num}, {"pre_softmax", s.pre_softmax},
              {"norm", s.norm}, {"pos_reg", s.pos_reg}};
}

json OptionsJson(const TrainOptions& o) {
  json j;
  j["data"] = {{"spec", o.data.spec},           {"image_root", o.data.image_root},
               {"split", o.data.split},         {"max_bad_samples", o.data.max_bad_samples},
               {"twin_prob", o.data.twin_prob}, {"min_items", o.data.min_items},
               {"max_items", o.data.max_items}, {"random_caption_style", o.data.random_caption_style},
               {"fashion_mnist_dir", o.data.fashion_mnist_dir}};
  j["model"] = {{"config", o.config_path},        {"embed_dim", o.embed_dim},
                {"image_width", o.image_width},   {"image_stages", o.image_stages},
                {"image_blocks", o.image_blocks}, {"image_pool_grid", o.image_pool_grid},
                {"image_stem_stride", o.image_stem_stride},
                {"image_size", o.image_size},     {"text_width", o.text_width},
                {"text_layers", o.text_layers},   {"text_heads", o.text_heads},
                {"context_length", o.context_length}};
  j["optim"] = {{"steps", o.steps},           {"batch_size", o.batch_size},
                {"lr", o.lr},                 {"weight_decay", o.weight_decay},
                {"warmup_steps", o.warmup_steps}, {"schedule", o.schedule},
                {"grad_clip", o.grad_clip},   {"seed", o.seed},
                {"threads", o.threads},       {"blas_threads", o.blas_threads},
                {"queue_depth", o.queue_depth}};
  j["eqsim"] = EqSimJson(o.eqsim);
  j["eval"] = {{"benchmark", o.eval_benchmark},     {"format", o.eval_format},
               {"image_root", o.eval_image_root},   {"limit", o.eval_limit},
               {"every", o.eval_every},             {"heldout_scenes", o.heldout_scenes},
               {"heldout_seed", o.heldout_seed}};
  j["checkpoint"] = {{"dir", o.checkpoint_dir},   {"every", o.checkpoint_every},
                     {"resume", o.resume},        {"keep", o.keep_checkpoints},
                     {"stop_after", o.stop_after}};
  j["output"] = {{"repository", o.repository},   {"model_name", o.model_name},
                 {"description", o.description}, {"metrics_log", o.metrics_log},
                 {"log_every", o.log_every}};
  return j;
}

absl::Status ValidateOptions(const TrainOptions& o) {
  auto bad = [](const std::string& m) { return absl::InvalidArgumentError(m); };
  if (o.steps <= 0) return bad(absl::StrCat("--steps must be > 0, got ", o.steps));
  if (o.batch_size < 2) return bad(absl::StrCat("--batch-size must be >= 2, got ", o.batch_size));
  if (!(o.lr > 0) || !std::isfinite(o.lr)) return bad(absl::StrCat("--lr must be > 0, got ", o.lr));
  if (o.weight_decay < 0) return bad("--weight-decay must be >= 0");
  if (o.warmup_steps < 0) return bad("--warmup-steps must be >= 0");
  if (o.schedule != "cosine" && o.schedule != "linear" && o.schedule != "constant") {
    return bad(absl::StrCat("--schedule must be cosine, linear or constant, got '", o.schedule, "'"));
  }
  if (o.grad_clip < 0) return bad("--grad-clip must be >= 0 (0 = off)");
  if (o.threads < 0) return bad("--threads must be >= 0 (0 = all CPUs)");
  if (o.blas_threads < 0) return bad("--blas-threads must be >= 0 (0 = leave OpenBLAS's default)");
  if (o.queue_depth < 1) return bad("--queue-depth must be >= 1");
  if (o.log_every < 1) return bad("--log-every must be >= 1");
  if (o.eval_every < 0 || o.checkpoint_every < 0 || o.stop_after < 0) {
    return bad("--eval-every, --checkpoint-every and --stop-after must be >= 0");
  }
  if (o.heldout_scenes < 0 || o.heldout_scenes > 2000) {
    return bad("--heldout-scenes must be in [0, 2000]");
  }
  if (o.keep_checkpoints < 1) return bad("--keep-checkpoints must be >= 1");
  if (o.resume && o.checkpoint_dir.empty()) return bad("--resume needs --checkpoint-dir");
  if ((o.checkpoint_every > 0 || o.stop_after > 0) && o.checkpoint_dir.empty() &&
      o.checkpoint_every > 0) {
    return bad("--checkpoint-every needs --checkpoint-dir");
  }
  if (o.repository.empty() != o.model_name.empty()) {
    return bad("--repository and --model-name go together");
  }
  if (!o.model_name.empty() &&
      (o.model_name.find('/') != std::string::npos || o.model_name[0] == '.')) {
    return bad(absl::StrCat("--model-name '", o.model_name, "' must be a plain folder name"));
  }
  if (o.eqsim.sample_num == 0 || o.eqsim.sample_num < -1) {
    return bad("--eqsim-sample-num must be -1 (all pairs) or >= 1");
  }
  if (!(o.eqsim.prop > 0)) return bad("--eqsim-prop must be > 0");
  return absl::OkStatus();
}

// The model config the run trains.
absl::StatusOr<config::ModelConfig> MakeConfig(const TrainOptions& o) {
  config::ModelConfig cfg;
  if (!o.config_path.empty()) {
    EQSIM_ASSIGN_OR_RETURN(cfg, ReadModelConfig(o.config_path));
    if (cfg.backend() != config::ModelConfig::NATIVE) {
      return absl::InvalidArgumentError(
          absl::StrCat(o.config_path, ": backend must be NATIVE to train (got ",
                       config::ModelConfig::Backend_Name(cfg.backend()), ")"));
    }
    if (cfg.tokenizer().kind() != config::TokenizerConfig::WORD &&
        cfg.tokenizer().kind() != config::TokenizerConfig::KIND_UNSPECIFIED) {
      return absl::InvalidArgumentError(
          absl::StrCat(o.config_path, ": tokenizer.kind must be WORD to train a native model"));
    }
  } else {
    cfg.set_backend(config::ModelConfig::NATIVE);
    cfg.set_embed_dim(o.embed_dim);
    cfg.mutable_image()->set_recipe(config::ImagePreprocess::NATIVE);
    cfg.mutable_image()->set_size(o.image_size);
    cfg.mutable_tokenizer()->set_context_length(o.context_length);
    auto* n = cfg.mutable_native();
    n->set_image_width(o.image_width);
    n->set_image_stages(o.image_stages);
    n->set_image_blocks(o.image_blocks);
    n->set_image_pool_grid(o.image_pool_grid);
    n->set_image_stem_stride(o.image_stem_stride);
    n->set_text_width(o.text_width);
    n->set_text_layers(o.text_layers);
    n->set_text_heads(o.text_heads);
    n->set_embed_dim(o.embed_dim);
  }
  cfg.set_name(o.model_name.empty() ? "eqsim-native" : o.model_name);
  cfg.mutable_tokenizer()->set_kind(config::TokenizerConfig::WORD);
  cfg.mutable_tokenizer()->set_vocab_file("vocab.txt");
  cfg.mutable_native()->set_vocab_size(0);  // each version's vocab.txt decides
  if (!o.description.empty()) cfg.set_description(o.description);
  cfg = WithDefaults(cfg);
  EQSIM_RETURN_IF_ERROR(ValidateModelConfig(cfg, o.config_path.empty() ? "model flags" : o.config_path));
  return cfg;
}

// Two configs describe the same architecture / inputs (what a shared config.pbtxt must).
std::string ConfigDifference(const config::ModelConfig& a, const config::ModelConfig& b) {
  config::ModelConfig x = WithDefaults(a), y = WithDefaults(b);
  auto cmp = [](const std::string& field, auto u, auto v) -> std::string {
    if (u == v) return "";
    std::ostringstream s;
    s << field << " " << u << " vs " << v;
    return s.str();
  };
  for (std::string d : {
           cmp("backend", x.backend(), y.backend()),
           cmp("embed_dim", x.embed_dim(), y.embed_dim()),
           cmp("image.recipe", x.image().recipe(), y.image().recipe()),
           cmp("image.size", x.image().size(), y.image().size()),
           cmp("tokenizer.kind", x.tokenizer().kind(), y.tokenizer().kind()),
           cmp("tokenizer.vocab_file", x.tokenizer().vocab_file(), y.tokenizer().vocab_file()),
           cmp("tokenizer.context_length", x.tokenizer().context_length(),
               y.tokenizer().context_length()),
           cmp("native.image_width", x.native().image_width(), y.native().image_width()),
           cmp("native.image_stages", x.native().image_stages(), y.native().image_stages()),
           cmp("native.image_blocks", x.native().image_blocks(), y.native().image_blocks()),
           cmp("native.image_pool_grid", x.native().image_pool_grid(), y.native().image_pool_grid()),
           cmp("native.image_stem_stride", x.native().image_stem_stride(),
               y.native().image_stem_stride()),
           cmp("native.text_width", x.native().text_width(), y.native().text_width()),
           cmp("native.text_layers", x.native().text_layers(), y.native().text_layers()),
           cmp("native.text_heads", x.native().text_heads(), y.native().text_heads()),
           cmp("native.vocab_size", x.native().vocab_size(), y.native().vocab_size()),
           cmp("native.embed_dim", x.native().embed_dim(), y.native().embed_dim())}) {
    if (!d.empty()) return d;
  }
  if (x.image().mean_size() != y.image().mean_size() || x.image().std_size() != y.image().std_size()) {
    return "image.mean / image.std";
  }
  for (int i = 0; i < x.image().mean_size(); ++i) {
    if (x.image().mean(i) != y.image().mean(i)) return "image.mean";
  }
  for (int i = 0; i < x.image().std_size(); ++i) {
    if (x.image().std(i) != y.image().std(i)) return "image.std";
  }
  return "";
}

double LrAt(const TrainOptions& o, int64_t step) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) {
    return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  }
  const double span = static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup_steps));
  const double progress = std::clamp(static_cast<double>(step - o.warmup_steps) / span, 0.0, 1.0);
  if (o.schedule == "cosine") return o.lr * 0.5 * (1.0 + std::cos(M_PI * progress));
  if (o.schedule == "linear") return o.lr * (1.0 - progress);
  return o.lr;
}

std::string Fingerprint(NativeDualEncoderImpl& model) {
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&](const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ULL;
  };
  torch::NoGradGuard g;
  for (const auto& p : model.named_parameters(true)) {
    mix(p.key().data(), p.key().size());
    torch::Tensor t = p.value().detach().to(torch::kCPU, torch::kFloat).contiguous();
    mix(t.data_ptr(), static_cast<size_t>(t.numel()) * sizeof(float));
  }
  return absl::StrFormat("%016x", h);
}

Matrix ToMatrix(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  Matrix m(c.size(0), c.size(1));
  std::memcpy(m.data.data(), c.data_ptr<float>(), m.data.size() * sizeof(float));
  return m;
}

// The evaluator's EmbeddingSource over the model being trained.
class ModelEmbeddingSource : public EmbeddingSource {
 public:
  ModelEmbeddingSource(Encoder* enc, const ImagePreprocessor* pre, const Tokenizer* tok)
      : enc_(enc), pre_(pre), tok_(tok) {}
  absl::StatusOr<Matrix> EmbedImages(const std::vector<std::string>& encoded) override {
    std::vector<ImageTensor> ts;
    ts.reserve(encoded.size());
    for (size_t i = 0; i < encoded.size(); ++i) {
      auto t = pre_->FromEncoded(encoded[i]);
      if (!t.ok()) return Annotate(t.status(), absl::StrCat("image ", i));
      ts.push_back(std::move(*t));
    }
    std::vector<const ImageTensor*> ptrs;
    for (const auto& t : ts) ptrs.push_back(&t);
    EQSIM_ASSIGN_OR_RETURN(Matrix m, enc_->EncodeImages(StackImages(ptrs)));
    L2NormalizeRows(m);
    return m;
  }
  absl::StatusOr<Matrix> EmbedTexts(const std::vector<std::string>& texts) override {
    EQSIM_ASSIGN_OR_RETURN(TokenBatch b, tok_->EncodeBatch(texts));
    EQSIM_ASSIGN_OR_RETURN(Matrix m, enc_->EncodeTexts(b));
    L2NormalizeRows(m);
    return m;
  }

 private:
  Encoder* enc_;
  const ImagePreprocessor* pre_;
  const Tokenizer* tok_;
};

struct HeldOut {
  ImageBatch images;
  TokenBatch tokens;
};

// ------------------------------------------------------------------ checkpoints

constexpr char kCkptPrefix[] = "step-";

// Newest complete checkpoint folder (step-<N>, published by rename) or "".
std::string LatestCheckpoint(const std::string& dir, int64_t* step) {
  std::string best;
  int64_t best_step = -1;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!absl::StartsWith(name, kCkptPrefix) || !e.is_directory()) continue;
    int64_t s = 0;
    if (!absl::SimpleAtoi(name.substr(sizeof(kCkptPrefix) - 1), &s)) continue;
    if (!fs::exists(e.path() / "state.json")) continue;
    if (s > best_step) {
      best_step = s;
      best = e.path().string();
    }
  }
  if (step != nullptr) *step = best_step;
  return best;
}

void PruneCheckpoints(const std::string& dir, int keep) {
  std::vector<std::pair<int64_t, fs::path>> all;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    int64_t s = 0;
    if (absl::StartsWith(name, kCkptPrefix) &&
        absl::SimpleAtoi(name.substr(sizeof(kCkptPrefix) - 1), &s)) {
      all.emplace_back(s, e.path());
    }
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) fs::remove_all(all[i].second, ec);
}

struct RunState {
  int64_t step = 0;
  int64_t position = 0;
  double elapsed = 0;  // seconds of training before this run
};

torch::Tensor GeneratorState(at::Generator& gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}
void SetGeneratorState(at::Generator& gen, const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

absl::Status SaveCheckpoint(const TrainOptions& o, const RunState& st, NativeDualEncoderImpl& model,
                            torch::optim::Optimizer& opt, at::Generator& gen,
                            const WordTokenizer& tok, const DataSource& src,
                            std::string* written) {
  std::error_code ec;
  fs::create_directories(o.checkpoint_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("--checkpoint-dir ", o.checkpoint_dir, ": ", ec.message()));
  }
  const std::string name = absl::StrFormat("%s%09d", kCkptPrefix, st.step);
  const fs::path final_dir = fs::path(o.checkpoint_dir) / name;
  const fs::path tmp = fs::path(o.checkpoint_dir) / absl::StrCat(".tmp-", name, "-", ::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  EQSIM_RETURN_IF_ERROR(SaveNativeWeights(model, (tmp / "weights.pt").string()));
  try {
    torch::serialize::OutputArchive ar;
    torch::serialize::OutputArchive opt_ar;
    opt.save(opt_ar);
    ar.write("optimizer", opt_ar);
    ar.write("rng_eqsim", GeneratorState(gen));
    at::Generator def = at::detail::getDefaultCPUGenerator();
    ar.write("rng_default", GeneratorState(def));
    ar.save_to((tmp / "state.pt").string());
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("checkpoint ", tmp.string(), ": ", FirstLine(e.what())));
  }
  json j;
  j["step"] = st.step;
  j["position"] = st.position;
  j["elapsed_s"] = st.elapsed;
  j["bad_keys"] = src.bad_keys();
  j["vocab"] = tok.words();
  j["options"] = OptionsJson(o);
  j["params_fingerprint"] = Fingerprint(model);
  j["created_utc"] = UtcNow();
  EQSIM_RETURN_IF_ERROR(WriteFileAtomic((tmp / "state.json").string(), j.dump(1)));
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("checkpoint ", final_dir.string(), ": rename failed: ",
                                            ec.message()));
  }
  PruneCheckpoints(o.checkpoint_dir, o.keep_checkpoints);
  *written = final_dir.string();
  return absl::OkStatus();
}

// Fields that must not change between a checkpoint and its resumption.
absl::Status CheckResumeCompatible(const json& saved, const json& now, const std::string& where) {
  for (const char* group : {"data", "model"}) {
    for (auto it = now[group].begin(); it != now[group].end(); ++it) {
      if (std::string(group) == "data" && it.key() == "max_bad_samples") continue;
      if (!saved.contains(group) || !saved[group].contains(it.key()) ||
          saved[group][it.key()] != it.value()) {
        return absl::FailedPreconditionError(absl::StrCat(
            where, ": cannot resume: ", group, ".", it.key(), " was ",
            saved.contains(group) && saved[group].contains(it.key())
                ? saved[group][it.key()].dump() : std::string("absent"),
            " in the checkpoint, now ", it.value().dump()));
      }
    }
  }
  for (const char* key : {"seed", "batch_size"}) {
    if (saved["optim"][key] != now["optim"][key]) {
      return absl::FailedPreconditionError(absl::StrCat(
          where, ": cannot resume: ", key, " was ", saved["optim"][key].dump(),
          " in the checkpoint, now ", now["optim"][key].dump()));
    }
  }
  if (saved["eqsim"] != now["eqsim"]) {
    std::cerr << "eqsim-train: warning: EqSim settings differ from the checkpoint's\n";
  }
  for (const char* key : {"lr", "weight_decay", "warmup_steps", "schedule", "grad_clip", "steps"}) {
    if (saved["optim"][key] != now["optim"][key]) {
      std::cerr << "eqsim-train: warning: " << key << " was " << saved["optim"][key].dump()
                << " in the checkpoint, now " << now["optim"][key].dump()
                << " (the run will not match an uninterrupted one)\n";
    }
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------ publishing

absl::Status PublishVersion(const TrainOptions& o, const config::ModelConfig& cfg,
                            NativeDualEncoderImpl& model, const WordTokenizer& tok,
                            const json& card_base, TrainResult* result) {
  const fs::path model_dir = fs::path(o.repository) / o.model_name;
  std::error_code ec;
  fs::create_directories(model_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat(model_dir.string(), ": cannot create: ",
                                                    ec.message()));
  }
  const std::string cfg_path = (model_dir / kConfigFileName).string();
  if (fs::exists(cfg_path)) {
    EQSIM_ASSIGN_OR_RETURN(config::ModelConfig existing, ReadModelConfig(cfg_path));
    const std::string diff = ConfigDifference(existing, cfg);
    if (!diff.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          cfg_path, " exists and differs from the trained model (", diff,
          "); use another --model-name or a matching architecture"));
    }
  } else {
    EQSIM_RETURN_IF_ERROR(WriteModelConfig(cfg, cfg_path));
  }
  for (int attempt = 0; attempt < 20; ++attempt) {
    EQSIM_ASSIGN_OR_RETURN(int64_t version, NextVersion(model_dir.string()));
    const fs::path tmp = model_dir / absl::StrCat(".tmp-", version, "-", ::getpid());
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat(tmp.string(), ": ", ec.message()));
    EQSIM_RETURN_IF_ERROR(SaveNativeWeights(model, (tmp / kNativeWeightsFileName).string()));
    EQSIM_RETURN_IF_ERROR(tok.Save((tmp / "vocab.txt").string()));
    json card = card_base;
    card["model"] = o.model_name;
    card["version"] = version;
    EQSIM_RETURN_IF_ERROR(WriteFileAtomic((tmp / "model_card.json").string(), card.dump(2)));
    const fs::path final_dir = model_dir / std::to_string(version);
    // rename(2) of a directory onto an existing non-empty one fails: another trainer won
    // this number, take the next one.
    fs::rename(tmp, final_dir, ec);
    if (!ec) {
      result->version = version;
      result->version_dir = final_dir.string();
      return absl::OkStatus();
    }
    fs::remove_all(tmp);
    if (!fs::exists(final_dir)) {
      return absl::InternalError(absl::StrCat(final_dir.string(), ": rename failed: ", ec.message()));
    }
  }
  return absl::AbortedError(absl::StrCat(model_dir.string(), ": could not claim a version number"));
}

// ------------------------------------------------------------------ progress

class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled), tty_(::isatty(2) != 0) {}
  void Line(const std::string& s) {
    if (!enabled_) return;
    if (tty_) {
      std::cerr << "\r\033[K" << s << std::flush;
      open_ = true;
    } else {
      std::cerr << s << "\n";
    }
  }
  void Message(const std::string& s) {
    if (open_) std::cerr << "\n";
    open_ = false;
    std::cerr << s << "\n";
  }
  void Finish() {
    if (open_) std::cerr << "\n";
    open_ = false;
  }

 private:
  bool enabled_, tty_, open_ = false;
};

struct Window {
  int64_t n = 0;
  double loss = 0, itc = 0, text = 0, image = 0, group = 0, v1 = 0, pos = 0;
  void Clear() { *this = Window(); }
};

}  // namespace

absl::StatusOr<config::ModelConfig> ModelConfigFromOptions(const TrainOptions& options) {
  return MakeConfig(options);
}

std::string TrainOptionsToJson(const TrainOptions& options) { return OptionsJson(options).dump(); }

std::string TrainResult::ToJson() const {
  json j{{"steps", steps_done},
         {"steps_this_run", steps_this_run},
         {"resumed_from", resumed_from},
         {"stopped_early", stopped_early},
         {"seconds", seconds},
         {"steps_per_s", steps_per_s},
         {"samples_per_s", samples_per_s},
         {"data_wait_s", data_wait_s},
         {"loss", loss},
         {"first_loss", first_loss},
         {"itc", itc},
         {"eqsim_text", eqsim_text},
         {"eqsim_image", eqsim_image},
         {"eqsim_group", eqsim_group},
         {"eqsim_v1", eqsim_v1},
         {"eqsim_pos_reg", eqsim_pos_reg},
         {"logit_scale", logit_scale},
         {"heldout", {{"n", heldout.n}, {"i2t_r1", heldout.i2t_r1},
                      {"i2t_r5", heldout.i2t_r5}, {"t2i_r1", heldout.t2i_r1}}},
         {"parameters", parameters},
         {"vocab_size", vocab_size},
         {"bad_samples", bad_samples},
         {"params_fingerprint", params_fingerprint},
         {"version", version},
         {"version_dir", version_dir},
         {"checkpoint", checkpoint}};
  if (!benchmark_json.empty()) {
    json b = json::parse(benchmark_json, nullptr, false);
    j["benchmark"] = b.is_discarded() ? json(benchmark_json) : b;
  }
  return j.dump();
}

absl::StatusOr<TrainResult> Train(const TrainOptions& in_options) {
  TrainOptions o = in_options;
  EQSIM_RETURN_IF_ERROR(ValidateOptions(o));
  o.data.seed = o.seed;
  const int threads =
      o.threads > 0 ? o.threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  if (o.blas_threads > 0 && openblas_set_num_threads != nullptr) {
    openblas_set_num_threads(o.blas_threads);
  }
  Progress progress(o.progress);
  TrainResult result;

  // Data.
  EQSIM_ASSIGN_OR_RETURN(std::unique_ptr<DataSource> source, OpenDataSource(o.data));

  // Resume state.
  RunState st;
  std::string resume_dir;
  json saved;
  if (o.resume) {
    int64_t step = -1;
    resume_dir = LatestCheckpoint(o.checkpoint_dir, &step);
    if (resume_dir.empty()) {
      progress.Message(absl::StrCat("eqsim-train: no checkpoint in ", o.checkpoint_dir,
                                    ", starting from scratch"));
    } else {
      std::ifstream f(fs::path(resume_dir) / "state.json");
      saved = json::parse(f, nullptr, false);
      if (saved.is_discarded() || !saved.is_object()) {
        return absl::DataLossError(absl::StrCat(resume_dir, "/state.json: not valid JSON"));
      }
      try {
        st.step = saved.at("step").get<int64_t>();
        st.position = saved.at("position").get<int64_t>();
        st.elapsed = saved.at("elapsed_s").get<double>();
        source->RestoreBad(saved.at("bad_keys").get<std::vector<int64_t>>());
      } catch (const std::exception& e) {
        return absl::DataLossError(absl::StrCat(resume_dir, "/state.json: ", e.what()));
      }
      EQSIM_RETURN_IF_ERROR(CheckResumeCompatible(saved["options"], OptionsJson(o), resume_dir));
      if (st.step >= o.steps) {
        return absl::FailedPreconditionError(absl::StrCat(
            resume_dir, " is at step ", st.step, ", not before --steps=", o.steps,
            " (nothing to do; raise --steps to train further)"));
      }
    }
  }

  // Tokenizer: the vocabulary of the data (or the checkpoint's).
  std::vector<std::string> words;
  if (!resume_dir.empty()) {
    words = saved.value("vocab", std::vector<std::string>{});
  } else {
    words = WordTokenizer::BuildVocabulary(source->VocabularyCorpus());
  }
  EQSIM_ASSIGN_OR_RETURN(config::ModelConfig cfg, MakeConfig(o));
  std::unique_ptr<WordTokenizer> tok =
      WordTokenizer::FromVocabulary(words, cfg.tokenizer().context_length());
  EQSIM_ASSIGN_OR_RETURN(ImagePreprocessor pre, ImagePreprocessor::Create(cfg.image()));
  result.vocab_size = tok->vocab_size();

  // Model and optimizer.
  EQSIM_ASSIGN_OR_RETURN(NativeDualEncoder model,
                         BuildNativeModel(cfg, tok->vocab_size(), o.seed));
  model->train();
  result.parameters = model->parameter_count();
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : model->named_parameters(true)) {
    if (!p.value().requires_grad()) continue;
    // Matrices and conv kernels decay; biases, norm gains, positions and the scale do not.
    const bool is_weight = p.value().dim() >= 2 && !absl::StrContains(p.key(), "positional");
    (is_weight ? decay : no_decay).push_back(p.value());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(o.lr).weight_decay(0.0)));
  torch::optim::AdamW optimizer(std::move(groups), torch::optim::AdamWOptions(o.lr));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(MixSeed(o.seed, 0xE95117ULL));

  if (!resume_dir.empty()) {
    EQSIM_RETURN_IF_ERROR(LoadNativeWeights(*model, (fs::path(resume_dir) / "weights.pt").string()));
    try {
      torch::serialize::InputArchive ar;
      ar.load_from((fs::path(resume_dir) / "state.pt").string());
      torch::serialize::InputArchive opt_ar;
      ar.read("optimizer", opt_ar);
      optimizer.load(opt_ar);
      torch::Tensor s1, s2;
      ar.read("rng_eqsim", s1);
      SetGeneratorState(gen, s1);
      ar.read("rng_default", s2);
      at::Generator def = at::detail::getDefaultCPUGenerator();
      SetGeneratorState(def, s2);
    } catch (const std::exception& e) {
      return absl::DataLossError(absl::StrCat(resume_dir, "/state.pt: ", FirstLine(e.what())));
    }
    result.resumed_from = st.step;
    progress.Message(absl::StrCat("eqsim-train: resumed from ", resume_dir, " (step ", st.step,
                                  ", data position ", st.position, ")"));
  }

  // Held-out retrieval set (Fashion-MNIST TEST split) and the optional benchmark.
  HeldOut heldout;
  if (o.heldout_scenes > 0) {
    auto test = LoadFashionMnist(FashionMnistSplit::kTest, o.data.fashion_mnist_dir);
    if (!test.ok()) return Annotate(test.status(), "held-out retrieval set");
    HeldOutScenes hs = MakeHeldOutScenes(*test, o.heldout_scenes, o.heldout_seed);
    std::vector<ImageTensor> ts;
    for (const cv::Mat& m : hs.images) ts.push_back(pre.FromRgb(m));
    std::vector<const ImageTensor*> ptrs;
    for (const auto& t : ts) ptrs.push_back(&t);
    heldout.images = StackImages(ptrs);
    EQSIM_ASSIGN_OR_RETURN(heldout.tokens, tok->EncodeBatch(hs.captions));
  }
  std::optional<Benchmark> benchmark;
  if (!o.eval_benchmark.empty()) {
    EQSIM_ASSIGN_OR_RETURN(BenchmarkFormat fmt, ParseBenchmarkFormat(o.eval_format));
    ReadOptions ro;
    ro.image_root = o.eval_image_root.empty()
                        ? fs::path(o.eval_benchmark).parent_path().string()
                        : o.eval_image_root;
    ro.limit = o.eval_limit;
    auto b = ReadBenchmark(fmt, o.eval_benchmark, ro);
    if (!b.ok()) return Annotate(b.status(), "--eval-benchmark");
    benchmark = std::move(*b);
  }

  std::ofstream metrics;
  if (!o.metrics_log.empty()) {
    metrics.open(o.metrics_log, std::ios::app);
    if (!metrics) {
      return absl::PermissionDeniedError(
          absl::StrCat("--metrics-log ", o.metrics_log, ": cannot open for appending"));
    }
  }
  auto log_json = [&](const json& j) {
    if (metrics.is_open()) metrics << j.dump() << "\n" << std::flush;
  };

  auto eval_heldout = [&]() -> RetrievalMetrics {
    if (heldout.images.n == 0) return {};
    torch::NoGradGuard ng;
    Matrix all_i(0, 0), all_t(0, 0);
    const int64_t n = heldout.images.n;
    torch::Tensor x = torch::from_blob(heldout.images.data.data(),
                                       {n, 3, heldout.images.height, heldout.images.width},
                                       torch::kFloat);
    torch::Tensor ids = torch::from_blob(heldout.tokens.ids.data(), {n, heldout.tokens.length},
                                         torch::kLong);
    model->eval();
    Matrix mi = ToMatrix(model->encode_image(x));
    Matrix mt = ToMatrix(model->encode_text(ids));
    model->train();
    return ComputeRetrieval(mi, mt);
  };
  auto eval_benchmark = [&]() -> absl::StatusOr<std::string> {
    std::unique_ptr<Encoder> enc = MakeNativeEncoder(model, torch::kCPU);
    ModelEmbeddingSource src(enc.get(), &pre, tok.get());
    EvalOptions eo;
    eo.threads = 1;
    auto r = Evaluate(*benchmark, src, eo);
    model->train();
    if (!r.ok()) return Annotate(r.status(), "--eval-benchmark");
    return EvalResultToJson(*r, 20);
  };

  const EqSimOptions& loss_opts = o.eqsim;
  const int64_t end_step = o.stop_after > 0 ? std::min(o.steps, o.stop_after) : o.steps;
  std::vector<torch::Tensor> params = model->parameters();

  progress.Message(absl::StrCat(
      "eqsim-train: ", source->Describe(), "; native model ", result.parameters,
      " parameters, vocab ", tok->vocab_size(), "; ", o.steps, " steps x batch ", o.batch_size,
      ", ", threads, " threads; loss itc", o.eqsim.any() ? " + eqsim" : ""));

  Window window, first_window;
  bool first_done = false;
  int64_t samples_this_run = 0;
  int64_t position = st.position;
  std::string last_ckpt;
  const auto t_start = Clock::now();
  auto t_window = t_start;
  int64_t samples_window = 0;
  {
    BatchLoader loader(source.get(), &pre, tok.get(), o.batch_size, st.position, o.queue_depth);
    for (int64_t step = st.step; step < end_step; ++step) {
      const double lr = LrAt(o, step);
      for (auto& g : optimizer.param_groups()) {
        static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
      }
      EQSIM_ASSIGN_OR_RETURN(TrainBatch batch, loader.Next());
      const int64_t n = batch.images.n;
      double l_total = 0, l_itc = 0;
      EqSimTerms terms;
      try {
        torch::Tensor x = torch::from_blob(batch.images.data.data(),
                                           {n, 3, batch.images.height, batch.images.width},
                                           torch::kFloat);
        torch::Tensor ids =
            torch::from_blob(batch.tokens.ids.data(), {n, batch.tokens.length}, torch::kLong);
        torch::Tensor S = model->score_matrix(model->encode_image(x), model->encode_text(ids));
        torch::Tensor itc = ContrastiveLoss(S);
        torch::Tensor loss = itc;
        if (loss_opts.any()) {
          terms = EqSimLoss(S, loss_opts, &gen);
          loss = loss + terms.total;
        }
        optimizer.zero_grad();
        loss.backward();
        if (o.grad_clip > 0) torch::nn::utils::clip_grad_norm_(params, o.grad_clip);
        optimizer.step();
        l_total = loss.item<double>();
        l_itc = itc.item<double>();
      } catch (const std::exception& e) {
        return absl::InternalError(absl::StrCat("training step ", step + 1, ": ", FirstLine(e.what())));
      }
      if (!std::isfinite(l_total)) {
        return absl::InternalError(absl::StrCat(
            "training step ", step + 1, ": the loss is ", l_total,
            " (diverged); try a lower --lr or a stronger --grad-clip"));
      }
      position = batch.end_position;
      samples_this_run += n;
      samples_window += n;
      window.n++;
      window.loss += l_total;
      window.itc += l_itc;
      if (loss_opts.any()) {
        window.text += terms.text.item<double>();
        window.image += terms.image.item<double>();
        window.group += terms.group.item<double>();
        window.v1 += terms.v1.item<double>();
        window.pos += terms.pos_reg.item<double>();
      }
      const int64_t done = step + 1;
      const bool last = done == end_step;
      if (done % o.log_every == 0 || last) {
        const auto now = Clock::now();
        const double el = Seconds(t_start, now);
        const double rate = (done - st.step) / std::max(el, 1e-9);
        const double sps = samples_window / std::max(Seconds(t_window, now), 1e-9);
        const double k = 1.0 / std::max<int64_t>(1, window.n);
        float scale = 0;
        {
          torch::NoGradGuard ng;
          scale = model->logit_scale().exp().item<float>();
        }
        progress.Line(absl::StrFormat(
            "[%*d/%d] %3d%% loss %.4f itc %.4f eqsim t/i/v1 %.4f/%.4f/%.4f lr %.2e scale %.1f "
            "%.0f samples/s ETA %s",
            static_cast<int>(std::to_string(o.steps).size()), done, o.steps,
            static_cast<int>(100 * done / o.steps), window.loss * k, window.itc * k,
            window.text * k, window.image * k, window.v1 * k, lr, scale, sps,
            FormatDuration((o.steps - done) / rate)));
        log_json({{"type", "train"}, {"step", done}, {"loss", window.loss * k},
                  {"itc", window.itc * k}, {"eqsim_text", window.text * k},
                  {"eqsim_image", window.image * k}, {"eqsim_group", window.group * k},
                  {"eqsim_v1", window.v1 * k}, {"eqsim_pos_reg", window.pos * k}, {"lr", lr},
                  {"logit_scale", scale}, {"samples_per_s", sps}, {"twins", batch.twins},
                  {"elapsed_s", st.elapsed + el}, {"data_position", position},
                  {"bad_samples", source->bad_count()}});
        if (!first_done) {
          first_window = window;
          first_done = true;
        }
        result.loss = window.loss * k;
        result.itc = window.itc * k;
        result.eqsim_text = window.text * k;
        result.eqsim_image = window.image * k;
        result.eqsim_group = window.group * k;
        result.eqsim_v1 = window.v1 * k;
        result.eqsim_pos_reg = window.pos * k;
        result.logit_scale = scale;
        window.Clear();
        t_window = now;
        samples_window = 0;
      }
      if (o.eval_every > 0 && done % o.eval_every == 0 && !last) {
        RetrievalMetrics r = eval_heldout();
        json ev{{"type", "eval"}, {"step", done}, {"heldout_i2t_r1", r.i2t_r1},
                {"heldout_i2t_r5", r.i2t_r5}, {"heldout_t2i_r1", r.t2i_r1}, {"heldout_n", r.n}};
        std::string line = absl::StrFormat("eval @%d: held-out %d scenes i2t R@1 %.1f%% R@5 %.1f%% t2i R@1 %.1f%%",
                                           done, r.n, 100 * r.i2t_r1, 100 * r.i2t_r5, 100 * r.t2i_r1);
        if (benchmark) {
          EQSIM_ASSIGN_OR_RETURN(std::string bj, eval_benchmark());
          json b = json::parse(bj, nullptr, false);
          ev["benchmark"] = b;
          if (b.is_object() && b.contains("overall")) absl::StrAppend(&line, " benchmark ", b["overall"].dump());
        }
        log_json(ev);
        progress.Message(line);
      }
      if (!o.checkpoint_dir.empty() &&
          ((o.checkpoint_every > 0 && done % o.checkpoint_every == 0) || last)) {
        RunState now_st{done, position, st.elapsed + Seconds(t_start, Clock::now())};
        EQSIM_RETURN_IF_ERROR(SaveCheckpoint(o, now_st, *model, optimizer, gen, *tok, *source,
                                             &last_ckpt));
      }
    }
    result.data_wait_s = loader.wait_seconds();
  }
  progress.Finish();
  const double seconds = Seconds(t_start, Clock::now());
  result.steps_done = end_step;
  result.steps_this_run = end_step - st.step;
  result.stopped_early = end_step < o.steps;
  result.seconds = seconds;
  result.steps_per_s = result.steps_this_run / std::max(seconds, 1e-9);
  result.samples_per_s = samples_this_run / std::max(seconds, 1e-9);
  result.first_loss = first_window.loss / std::max<int64_t>(1, first_window.n);
  result.bad_samples = source->bad_count();
  result.checkpoint = last_ckpt;
  result.params_fingerprint = Fingerprint(*model);
  result.heldout = eval_heldout();
  if (benchmark) {
    EQSIM_ASSIGN_OR_RETURN(result.benchmark_json, eval_benchmark());
  }
  log_json({{"type", "final"}, {"step", end_step}, {"heldout_i2t_r1", result.heldout.i2t_r1},
            {"heldout_i2t_r5", result.heldout.i2t_r5}, {"heldout_t2i_r1", result.heldout.t2i_r1},
            {"seconds", seconds}, {"steps_per_s", result.steps_per_s}});
  progress.Message(absl::StrFormat(
      "eqsim-train: %d steps in %s (%.2f steps/s, %.0f samples/s, waited %.1fs for data); "
      "held-out %d scenes: i2t R@1 %.1f%% R@5 %.1f%%, t2i R@1 %.1f%% (chance %.1f%%)",
      result.steps_this_run, FormatDuration(seconds), result.steps_per_s, result.samples_per_s,
      result.data_wait_s, result.heldout.n, 100 * result.heldout.i2t_r1,
      100 * result.heldout.i2t_r5, 100 * result.heldout.t2i_r1,
      result.heldout.n > 0 ? 100.0 / result.heldout.n : 0.0));

  if (!o.repository.empty() && !result.stopped_early) {
    json card;
    card["format"] = "eqsim-model-card/1";
    card["backend"] = "native";
    card["created_utc"] = UtcNow();
    card["command_line"] = o.command_line;
    card["flags"] = o.flags;
    card["options"] = OptionsJson(o);
    card["data"] = {{"source", o.data.spec}, {"description", source->Describe()},
                    {"bad_samples", result.bad_samples}, {"vocab_size", result.vocab_size}};
    {
      json bad = json::array();
      for (const BadSample& b : source->bad_samples()) {
        if (bad.size() >= 100) break;
        bad.push_back({{"where", b.where}, {"why", b.why}});
      }
      card["data"]["bad_sample_list"] = bad;
    }
    card["architecture"] = {{"embed_dim", cfg.embed_dim()},
                            {"image_size", cfg.image().size()},
                            {"image_width", cfg.native().image_width()},
                            {"image_stages", cfg.native().image_stages()},
                            {"image_blocks", cfg.native().image_blocks()},
                            {"image_pool_grid", cfg.native().image_pool_grid()},
                            {"image_stem_stride", cfg.native().image_stem_stride()},
                            {"text_width", cfg.native().text_width()},
                            {"text_layers", cfg.native().text_layers()},
                            {"text_heads", cfg.native().text_heads()},
                            {"context_length", cfg.tokenizer().context_length()},
                            {"vocab_size", result.vocab_size},
                            {"parameters", result.parameters}};
    card["loss"] = {{"itc", true}, {"eqsim", EqSimJson(o.eqsim)}, {"eqsim_enabled", o.eqsim.any()}};
    card["training"] = {{"steps", end_step},
                        {"resumed_from", result.resumed_from},
                        {"batch_size", o.batch_size},
                        {"threads", threads},
                        {"seconds", seconds},
                        {"total_seconds", st.elapsed + seconds},
                        {"steps_per_s", result.steps_per_s},
                        {"samples_per_s", result.samples_per_s},
                        {"data_wait_s", result.data_wait_s}};
    json fm = json::parse(result.ToJson());
    fm.erase("version");
    fm.erase("version_dir");
    card["final_metrics"] = fm;
    card["params_fingerprint"] = result.params_fingerprint;
    EQSIM_RETURN_IF_ERROR(PublishVersion(o, cfg, *model, *tok, card, &result));
    progress.Message(absl::StrCat("eqsim-train: wrote ", result.version_dir));
  }
  return result;
}

}  // namespace eqsim
