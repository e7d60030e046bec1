// Serves the models of a Triton-like repository (model/repo/repository.h) and keeps them up
// to date: at start every model's selected versions are loaded (with warm-up); PollOnce()
// (called every --poll-interval-s) loads new versions, retires versions no longer selected
// and switches atomically: a request resolves a shared_ptr<ServingVersion> under a lock, so
// in-flight requests finish on the version they started with.
//
// A version that fails to load is never served; the versions that were serving keep serving
// (the selection is made among versions that loaded), the failure is logged, counted
// (eqsim_model_loads_total{result="error"}) and shown by ListModels (UNAVAILABLE + reason). It
// is retried only when its folder changes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "model/repo/repository.h"
#include "server/batcher.h"
#include "server/inference.h"
#include "server/metrics.h"

namespace eqsim {

struct ModelManagerOptions {
  std::string repository;
  std::string default_model;         // "" = the only model, if there is exactly one
  LoadOptions load;                  // threads, image limits, warm-up
  BatchQueueOptions default_batching;  // a model's config.batching overrides field by field
  // Before a new version serves: this many full batches of each modality at once through its
  // queues (Inference::WarmUp; usually the number of batch workers). 0 = none.
  int warmup_parallel_batches = 0;
};

struct ModelStatusInfo {
  enum State { kUnknown = 0, kLoading = 1, kReady = 2, kUnavailable = 3 };
  std::string name;
  int64_t version = 0;
  State state = kUnknown;
  std::string reason;
  int dim = 0;
  std::string backend, device, tokenizer;
  int image_size = 0;
};

using ModelLoadFn = std::function<absl::StatusOr<std::shared_ptr<LoadedModel>>(
    const std::string& repo, const std::string& name, int64_t version)>;

class ModelManager {
 public:
  // `inference` registers each version's batch queues; `metrics` may be null. `load` defaults
  // to LoadModelVersion(repo, name, version, options.load).
  ModelManager(ModelManagerOptions options, Inference* inference, Metrics* metrics,
               ModelLoadFn load = nullptr);
  ~ModelManager();

  // Scans the repository and loads / retires versions. Returns an error only when the
  // repository itself cannot be read; per-model problems are logged and listed.
  absl::Status PollOnce();

  // name "" = default model; version 0 = newest served. NOT_FOUND for unknown models or
  // versions, UNAVAILABLE while a known model has no version ready, INVALID_ARGUMENT when the
  // name is empty and several models are served without --default-model.
  absl::StatusOr<std::shared_ptr<const ServingVersion>> Resolve(const std::string& name,
                                                                int64_t version) const;

  std::vector<ModelStatusInfo> List() const;
  std::string DefaultModel() const;  // "" when ambiguous
  int ServingCount() const;          // versions ready
  // Every version being served, by name then version.
  std::vector<std::shared_ptr<const ServingVersion>> Serving() const;

  // Retires every version (at shutdown).
  void UnloadAll();

 private:
  struct Entry {
    std::map<int64_t, std::shared_ptr<ServingVersion>> serving;
    std::map<int64_t, std::pair<std::string, std::string>> failed;  // version -> (reason, sig)
    std::string config_error;  // the model's config.pbtxt is unreadable / invalid
    std::vector<int64_t> loading;
  };
  void Log(const std::string& msg) const;
  absl::Status SyncModel(const std::string& name);

  const ModelManagerOptions options_;
  Inference* inference_;
  Metrics* metrics_;
  ModelLoadFn load_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> models_ ABSL_GUARDED_BY(mu_);
};

}  // namespace eqsim
