#include "server/model_manager.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"

namespace eqsim {
namespace fs = std::filesystem;

namespace {

// Changes when anything in the version folder (or the model's config) changes, so that a
// failed version is retried after it was fixed, and only then.
std::string FolderSignature(const std::string& model_dir, int64_t version) {
  std::string sig;
  std::error_code ec;
  auto add = [&](const fs::path& p) {
    auto t = fs::last_write_time(p, ec);
    if (ec) return;
    auto size = fs::is_regular_file(p, ec) ? fs::file_size(p, ec) : 0;
    absl::StrAppend(&sig, p.filename().string(), ":", size, ":",
                    t.time_since_epoch().count(), ";");
  };
  add(fs::path(model_dir) / kConfigFileName);
  const fs::path vdir = fs::path(model_dir) / std::to_string(version);
  add(vdir);
  for (fs::directory_iterator it(vdir, ec), end; !ec && it != end; it.increment(ec)) {
    add(it->path());
  }
  return sig;
}

}  // namespace

ModelManager::ModelManager(ModelManagerOptions options, Inference* inference, Metrics* metrics,
                           ModelLoadFn load)
    : options_(std::move(options)),
      inference_(inference),
      metrics_(metrics),
      load_(std::move(load)) {
  if (!load_) {
    LoadOptions lo = options_.load;
    load_ = [lo](const std::string& repo, const std::string& name, int64_t version) {
      return LoadModelVersion(repo, name, version, lo);
    };
  }
}

ModelManager::~ModelManager() = default;

void ModelManager::Log(const std::string& msg) const {
  std::fprintf(stderr, "[eqsim-server] %s\n", msg.c_str());
}

absl::Status ModelManager::PollOnce() {
  auto names = ListModelNames(options_.repository);
  if (!names.ok()) {
    return absl::Status(names.status().code(),
                        absl::StrCat("model repository: ", names.status().message()));
  }
  std::set<std::string> present(names->begin(), names->end());
  // Models that disappeared: retire all their versions.
  std::vector<std::shared_ptr<ServingVersion>> retired;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = models_.begin(); it != models_.end();) {
      if (present.count(it->first)) {
        ++it;
        continue;
      }
      for (auto& [v, sv] : it->second.serving) retired.push_back(sv);
      it = models_.erase(it);
    }
  }
  for (auto& sv : retired) {
    Log(absl::StrCat("model ", sv->name(), " version ", sv->version(),
                     ": removed from the repository; unloading"));
    if (inference_) inference_->RemoveQueues(*sv);
    if (metrics_) metrics_->ModelReady(sv->name(), sv->version(), false);
  }
  for (const auto& name : *names) {
    absl::Status s = SyncModel(name);
    if (!s.ok()) Log(std::string(s.message()));
  }
  return absl::OkStatus();
}

absl::Status ModelManager::SyncModel(const std::string& name) {
  const std::string model_dir = (fs::path(options_.repository) / name).string();
  const std::string cfg_path = (fs::path(model_dir) / kConfigFileName).string();
  absl::StatusOr<config::ModelConfig> cfg = ReadModelConfig(cfg_path);
  if (cfg.ok()) {
    absl::Status v = ValidateModelConfig(*cfg, cfg_path, name);
    if (!v.ok()) cfg = v;
  }
  absl::StatusOr<std::vector<int64_t>> available =
      cfg.ok() ? ListVersions(model_dir) : absl::StatusOr<std::vector<int64_t>>(cfg.status());
  if (!available.ok()) {
    const std::string msg = std::string(available.status().message());
    absl::MutexLock lock(&mu_);
    Entry& e = models_[name];
    if (e.config_error != msg) {
      e.config_error = msg;
      if (metrics_) metrics_->ModelLoad(name, false);
      return absl::InvalidArgumentError(
          absl::StrCat("model ", name, ": ", msg, " (versions already serving keep serving)"));
    }
    return absl::OkStatus();
  }
  {
    absl::MutexLock lock(&mu_);
    models_[name].config_error.clear();
  }
  std::set<int64_t> failed_now;
  for (int round = 0; round < 16; ++round) {
    std::vector<int64_t> candidates;
    std::vector<int64_t> to_load;
    {
      absl::MutexLock lock(&mu_);
      Entry& e = models_[name];
      for (int64_t v : *available) {
        auto f = e.failed.find(v);
        if (f != e.failed.end() && f->second.second == FolderSignature(model_dir, v)) continue;
        candidates.push_back(v);
      }
      for (int64_t v : SelectVersions(*cfg, candidates)) {
        if (!e.serving.count(v)) to_load.push_back(v);
      }
      e.loading = to_load;
    }
    if (to_load.empty()) break;
    for (int64_t v : to_load) {
      const std::string sig = FolderSignature(model_dir, v);
      Log(absl::StrCat("model ", name, " version ", v, ": loading"));
      const absl::Time start = absl::Now();
      absl::StatusOr<std::shared_ptr<LoadedModel>> loaded = load_(options_.repository, name, v);
      std::shared_ptr<ServingVersion> sv;
      absl::Status status = loaded.status();
      if (status.ok()) {
        sv = std::make_shared<ServingVersion>();
        sv->model = *loaded;
        sv->batching = options_.default_batching;
        auto raw = ReadVersionConfig(model_dir, name, v);
        if (raw.ok()) {
          const auto& b = raw->batching();
          if (b.max_batch_size() > 0) sv->batching.max_batch_size = b.max_batch_size();
          if (b.max_queue_delay_us() > 0) {
            sv->batching.max_queue_delay = absl::Microseconds(b.max_queue_delay_us());
          }
          if (b.max_queue_size() > 0) sv->batching.max_queue_size = b.max_queue_size();
        }
        sv->image_queue = absl::StrCat(name, "/", v, "/image");
        sv->text_queue = absl::StrCat(name, "/", v, "/text");
        if (inference_) status = inference_->AddQueues(sv);
        if (status.ok() && inference_ && options_.warmup_parallel_batches > 0) {
          status = inference_->WarmUp(sv, options_.warmup_parallel_batches);
          if (!status.ok()) inference_->RemoveQueues(*sv);
        }
      }
      if (metrics_) metrics_->ModelLoad(name, status.ok());
      absl::MutexLock lock(&mu_);
      Entry& e = models_[name];
      if (status.ok()) {
        e.serving[v] = sv;
        e.failed.erase(v);
        Log(absl::StrCat("model ", name, " version ", v, ": ready (", sv->model->encoder->backend(),
                         " on ", sv->model->encoder->device(), ", dim ",
                         sv->model->encoder->dim(), ", loaded and warmed up in ",
                         absl::FormatDuration(absl::Now() - start), ")"));
        if (metrics_) metrics_->ModelReady(name, v, true);
      } else {
        e.failed[v] = {std::string(status.message()), sig};
        failed_now.insert(v);
        Log(absl::StrCat("model ", name, " version ", v, ": load FAILED: ", status.message(),
                         "; versions already serving keep serving"));
      }
    }
  }
  // Retire versions that are no longer selected, but never the last one serving unless its
  // folder is gone.
  std::vector<std::shared_ptr<ServingVersion>> retired;
  {
    absl::MutexLock lock(&mu_);
    Entry& e = models_[name];
    e.loading.clear();
    std::vector<int64_t> loaded_versions;
    for (auto& [v, sv] : e.serving) loaded_versions.push_back(v);
    std::vector<int64_t> keep = SelectVersions(*cfg, loaded_versions);
    std::set<int64_t> keep_set(keep.begin(), keep.end());
    std::set<int64_t> avail_set(available->begin(), available->end());
    for (auto it = e.serving.begin(); it != e.serving.end();) {
      if (keep_set.count(it->first) && avail_set.count(it->first)) {
        ++it;
      } else {
        retired.push_back(it->second);
        it = e.serving.erase(it);
      }
    }
  }
  for (auto& sv : retired) {
    Log(absl::StrCat("model ", name, " version ", sv->version(),
                     ": no longer selected; unloading once in-flight requests finish"));
    if (inference_) inference_->RemoveQueues(*sv);
    if (metrics_) metrics_->ModelReady(name, sv->version(), false);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const ServingVersion>> ModelManager::Resolve(
    const std::string& name, int64_t version) const {
  absl::MutexLock lock(&mu_);
  std::string n = name;
  if (n.empty()) {
    if (!options_.default_model.empty()) {
      n = options_.default_model;
    } else if (models_.size() == 1) {
      n = models_.begin()->first;
    } else if (models_.empty()) {
      return absl::UnavailableError("no model is loaded yet");
    } else {
      std::vector<std::string> names;
      for (auto& [k, e] : models_) names.push_back(k);
      return absl::InvalidArgumentError(absl::StrCat(
          "model.name is empty and several models are served (", absl::StrJoin(names, ", "),
          "); name one, or start the server with --default-model"));
    }
  }
  if (version < 0) {
    return absl::InvalidArgumentError(absl::StrCat("model.version must be >= 0, got ", version));
  }
  auto it = models_.find(n);
  if (it == models_.end()) {
    std::vector<std::string> names;
    for (auto& [k, e] : models_) names.push_back(k);
    return absl::NotFoundError(absl::StrCat("model '", n, "' is not served (models: ",
                                            names.empty() ? "none" : absl::StrJoin(names, ", "),
                                            ")"));
  }
  const Entry& e = it->second;
  if (e.serving.empty()) {
    if (!e.loading.empty()) return absl::UnavailableError(absl::StrCat("model '", n, "' is loading"));
    std::string why = e.config_error;
    if (why.empty() && !e.failed.empty()) why = e.failed.rbegin()->second.first;
    return absl::UnavailableError(
        absl::StrCat("model '", n, "' has no version ready", why.empty() ? "" : ": ", why));
  }
  if (version == 0) return std::shared_ptr<const ServingVersion>(e.serving.rbegin()->second);
  auto v = e.serving.find(version);
  if (v == e.serving.end()) {
    std::vector<std::string> vs;
    for (auto& [k, sv] : e.serving) vs.push_back(std::to_string(k));
    return absl::NotFoundError(absl::StrCat("model '", n, "' version ", version,
                                            " is not served (serving: ", absl::StrJoin(vs, ", "),
                                            ")"));
  }
  return std::shared_ptr<const ServingVersion>(v->second);
}

std::vector<ModelStatusInfo> ModelManager::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<ModelStatusInfo> out;
  for (const auto& [name, e] : models_) {
    std::set<int64_t> listed;
    for (const auto& [v, sv] : e.serving) {
      ModelStatusInfo s;
      s.name = name;
      s.version = v;
      s.state = ModelStatusInfo::kReady;
      const LoadedModel& m = *sv->model;
      s.dim = m.encoder->dim();
      s.backend = m.encoder->backend();
      s.device = m.encoder->device();
      s.tokenizer = m.tokenizer->name();
      s.image_size = m.preprocessor->size();
      out.push_back(s);
      listed.insert(v);
    }
    for (int64_t v : e.loading) {
      if (listed.count(v)) continue;
      ModelStatusInfo s;
      s.name = name;
      s.version = v;
      s.state = ModelStatusInfo::kLoading;
      out.push_back(s);
      listed.insert(v);
    }
    for (const auto& [v, f] : e.failed) {
      if (listed.count(v)) continue;
      ModelStatusInfo s;
      s.name = name;
      s.version = v;
      s.state = ModelStatusInfo::kUnavailable;
      s.reason = f.first;
      out.push_back(s);
    }
    if (!e.config_error.empty()) {
      ModelStatusInfo s;
      s.name = name;
      s.version = 0;
      s.state = e.serving.empty() ? ModelStatusInfo::kUnavailable : ModelStatusInfo::kReady;
      s.reason = e.config_error;
      out.push_back(s);
    }
  }
  return out;
}

std::string ModelManager::DefaultModel() const {
  if (!options_.default_model.empty()) return options_.default_model;
  absl::MutexLock lock(&mu_);
  return models_.size() == 1 ? models_.begin()->first : "";
}

int ModelManager::ServingCount() const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [name, e] : models_) n += static_cast<int>(e.serving.size());
  return n;
}

std::vector<std::shared_ptr<const ServingVersion>> ModelManager::Serving() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<const ServingVersion>> out;
  for (const auto& [name, e] : models_) {
    for (const auto& [v, sv] : e.serving) out.push_back(sv);
  }
  return out;
}

void ModelManager::UnloadAll() {
  std::vector<std::shared_ptr<ServingVersion>> retired;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, e] : models_) {
      for (auto& [v, sv] : e.serving) retired.push_back(sv);
      e.serving.clear();
    }
  }
  for (auto& sv : retired) {
    if (inference_) inference_->RemoveQueues(*sv);
    if (metrics_) metrics_->ModelReady(sv->name(), sv->version(), false);
  }
}

}  // namespace eqsim
