// Server-side evaluation jobs (EvaluateBenchmark & co).
//
// A job reads an EqBen-style benchmark below --data-root (paths are confined: no "..", no
// absolute paths, no symlink leading outside) and scores it through the server's own batcher
// at LOW priority, so online requests keep their latency. --job-workers jobs run at a time.
//
// Persistence (--state-dir): <state-dir>/jobs/<id>/
//   job.pbtxt           the eqsim.v1.Evaluation in protobuf text format (atomic rewrite on
//                       every state change and finished chunk)
//   chunks/<n>.json     finished chunks of samples (model/bench/evaluator.h ChunkResult)
//   scores.npy          per-sample scores of a finished job (when kept)
// At start, finished jobs are listed as they were; QUEUED or RUNNING ones (the server
// stopped while they ran) are queued again and resume from their finished chunks, on the
// same model version when it is still served (else from scratch on the spec's model).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "eqsim/v1/similarity.pb.h"
#include "server/batcher.h"
#include "server/inference.h"
#include "server/metrics.h"
#include "server/model_manager.h"

namespace eqsim {

struct JobManagerOptions {
  std::string state_dir;          // "" = jobs live in memory only
  std::string data_root;          // "" = evaluations are refused (FAILED_PRECONDITION)
  int workers = 1;                // jobs running at the same time
  int64_t batch_size = 64;        // items per embedding call
  int64_t chunk_size = 512;       // samples per persisted chunk
  int loader_threads = 2;         // image file readers per job
  int64_t max_image_bytes = int64_t{64} << 20;
  int64_t score_chunk_bytes = 1 << 20;  // GetEvaluationScores message size
};

// Receives a job's snapshots. Calls are serialised and made under the manager's watcher lock:
// implementations must not call back into the JobManager.
class JobWatcher {
 public:
  virtual ~JobWatcher() = default;
  virtual void OnUpdate(const v1::Evaluation& snapshot) = 0;
  // The job ended (OK, after the final OnUpdate) or the server is stopping (UNAVAILABLE).
  virtual void OnEnd(const absl::Status& status) = 0;
};

class JobManager {
 public:
  JobManager(JobManagerOptions options, ModelManager* models, Inference* inference,
             Metrics* metrics);
  ~JobManager();

  // Loads persisted jobs, queues interrupted ones, starts the workers.
  absl::Status Start();

  // Validates the spec (format, confined paths that exist, model) and queues the job.
  absl::StatusOr<v1::Evaluation> Submit(const v1::EvaluationSpec& spec);
  absl::StatusOr<v1::Evaluation> Get(const std::string& id) const;
  std::vector<v1::Evaluation> List(const std::vector<v1::JobState>& states) const;  // newest first
  // QUEUED jobs end at once; RUNNING ones stop at the next batch. Finished jobs are returned
  // unchanged.
  absl::StatusOr<v1::Evaluation> Cancel(const std::string& id);
  // The .npy path of a finished job. FAILED_PRECONDITION before it succeeded or without scores.
  absl::StatusOr<std::string> ScoresFile(const std::string& id) const;
  // Reads the score file of a finished job (in memory when there is no state dir).
  absl::StatusOr<std::string> ScoresBytes(const std::string& id) const;

  // Calls watcher->OnUpdate with the current snapshot at once, then on every change; OnEnd
  // when the job ends (immediately after the first OnUpdate for a finished job).
  absl::StatusOr<int64_t> Watch(const std::string& id, std::shared_ptr<JobWatcher> watcher);
  void Unwatch(int64_t handle);  // no call to the watcher after this returns

  // Interrupts running jobs (they stay RUNNING on disk and resume at the next start), ends
  // every watcher with UNAVAILABLE and joins the workers.
  void Shutdown();

  int64_t running() const;

 private:
  struct Job {
    v1::Evaluation eval;  // guarded by JobManager::mu_
    std::shared_ptr<CancelToken> cancel = std::make_shared<CancelToken>();
    std::string scores;  // in-memory score file when there is no state dir
  };
  struct WatchEntry {
    std::string job;
    std::shared_ptr<JobWatcher> watcher;
  };

  void WorkerLoop();
  void Run(const std::shared_ptr<Job>& job);
  // Persists and publishes the job's current snapshot (mu_ held by the caller for `eval`).
  void Publish(const std::string& id, const v1::Evaluation& snapshot, bool persist);
  absl::Status Persist(const v1::Evaluation& snapshot);
  std::string JobDir(const std::string& id) const;
  void UpdateJobGauges();

  const JobManagerOptions options_;
  ModelManager* models_;
  Inference* inference_;
  Metrics* metrics_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t running_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex watch_mu_ ABSL_ACQUIRED_AFTER(mu_);
  // Serialises writes of job.pbtxt; a snapshot older than the one already written (earlier
  // state, fewer samples done) is not written, so concurrent savers never move a job back.
  absl::Mutex persist_mu_;
  std::map<std::string, std::pair<int, int64_t>> persisted_ ABSL_GUARDED_BY(persist_mu_);
  std::map<int64_t, WatchEntry> watchers_ ABSL_GUARDED_BY(watch_mu_);
  int64_t next_watch_ ABSL_GUARDED_BY(watch_mu_) = 1;

  std::vector<std::thread> workers_;
};

}  // namespace eqsim
