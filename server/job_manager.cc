#include "server/job_manager.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "google/protobuf/text_format.h"
#include "model/bench/evaluator.h"
#include "model/bench/readers.h"
#include "model/core/status_macros.h"

namespace eqsim {
namespace fs = std::filesystem;

namespace {

void Log(const std::string& msg) { std::fprintf(stderr, "[eqsim-server] %s\n", msg.c_str()); }

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

bool Terminal(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

absl::Status WriteFileAtomic(const std::string& path, const std::string& data) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  // Unique per writer: two threads saving the same file never share a temporary.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." +
                          std::to_string(counter.fetch_add(1));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::InternalError("cannot write " + tmp);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) return absl::InternalError("cannot write " + tmp + " (disk full?)");
  }
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError("cannot rename " + tmp + ": " + ec.message());
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string NewJobId() {
  static absl::BitGen* gen = new absl::BitGen();
  static absl::Mutex mu;
  uint32_t r;
  {
    absl::MutexLock lock(&mu);
    r = absl::Uniform<uint32_t>(*gen);
  }
  return absl::StrCat("ev-", absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::UTCTimeZone()),
                      "-", absl::StrFormat("%08x", r));
}

// An EmbeddingSource that goes through the server's batcher at LOW priority.
class BatcherSource : public EmbeddingSource {
 public:
  BatcherSource(Inference* inference, std::shared_ptr<const ServingVersion> version,
                std::shared_ptr<CancelToken> cancel)
      : inference_(inference), version_(std::move(version)), cancel_(std::move(cancel)) {}
  absl::StatusOr<Matrix> EmbedImages(const std::vector<std::string>& encoded) override {
    return Embed(encoded, true);
  }
  absl::StatusOr<Matrix> EmbedTexts(const std::vector<std::string>& texts) override {
    return Embed(texts, false);
  }

 private:
  absl::StatusOr<Matrix> Embed(const std::vector<std::string>& data, bool images) {
    if (data.empty()) return Matrix(0, version_->model->encoder->dim());
    std::vector<ItemRef> items;
    items.reserve(data.size());
    for (const auto& d : data) items.push_back({images, d});
    CallOptions o;
    o.priority = Priority::kLow;
    o.cancel = cancel_;
    return inference_->EmbedSync(version_, std::move(items), std::move(o), /*normalize=*/true);
  }
  Inference* inference_;
  std::shared_ptr<const ServingVersion> version_;
  std::shared_ptr<CancelToken> cancel_;
};

void ToProto(const SubsetMetrics& m, v1::SubsetResult* out) {
  out->set_subset(m.subset);
  out->set_samples(m.samples);
  out->set_skipped(m.skipped);
  out->set_text_score(m.text_score());
  out->set_image_score(m.image_score());
  out->set_group_score(m.group_score());
  out->set_pairwise_accuracy(m.pairwise_accuracy());
}

}  // namespace

JobManager::JobManager(JobManagerOptions options, ModelManager* models, Inference* inference,
                       Metrics* metrics)
    : options_(std::move(options)), models_(models), inference_(inference), metrics_(metrics) {}

JobManager::~JobManager() { Shutdown(); }

std::string JobManager::JobDir(const std::string& id) const {
  return (fs::path(options_.state_dir) / "jobs" / id).string();
}

absl::Status JobManager::Persist(const v1::Evaluation& e) {
  if (options_.state_dir.empty()) return absl::OkStatus();
  const bool terminal = e.state() == v1::SUCCEEDED || e.state() == v1::FAILED ||
                        e.state() == v1::CANCELLED;
  const std::pair<int, int64_t> rank{terminal ? 2 : (e.state() == v1::RUNNING ? 1 : 0),
                                     e.progress().done()};
  absl::MutexLock lock(&persist_mu_);
  auto it = persisted_.find(e.id());
  if (it != persisted_.end() && rank < it->second) return absl::OkStatus();
  std::string text;
  google::protobuf::TextFormat::PrintToString(e, &text);
  absl::Status s = WriteFileAtomic(JobDir(e.id()) + "/job.pbtxt", text);
  if (s.ok()) persisted_[e.id()] = rank;
  return s;
}

absl::Status JobManager::Start() {
  if (!options_.state_dir.empty()) {
    std::error_code ec;
    fs::create_directories(fs::path(options_.state_dir) / "jobs", ec);
    if (ec) {
      return absl::InvalidArgumentError("--state-dir " + options_.state_dir +
                                        ": cannot create jobs folder: " + ec.message());
    }
    std::vector<std::shared_ptr<Job>> loaded;
    for (fs::directory_iterator it(fs::path(options_.state_dir) / "jobs", ec), end;
         !ec && it != end; it.increment(ec)) {
      const std::string file = (it->path() / "job.pbtxt").string();
      auto text = ReadAll(file);
      if (!text.ok()) continue;
      auto job = std::make_shared<Job>();
      if (!google::protobuf::TextFormat::ParseFromString(*text, &job->eval) ||
          job->eval.id() != it->path().filename().string()) {
        Log("ignoring unreadable job file " + file);
        continue;
      }
      loaded.push_back(job);
    }
    std::sort(loaded.begin(), loaded.end(), [](auto& a, auto& b) {
      return a->eval.created_unix_ms() < b->eval.created_unix_ms();
    });
    absl::MutexLock lock(&mu_);
    for (auto& job : loaded) {
      if (!Terminal(job->eval.state())) {
        Log(absl::StrCat("job ", job->eval.id(), " was interrupted at ",
                         job->eval.progress().done(), "/", job->eval.progress().total(),
                         " samples; queued to resume"));
        job->eval.set_state(v1::QUEUED);
        queue_.push_back(job->eval.id());
      }
      jobs_[job->eval.id()] = job;
    }
    if (!loaded.empty()) Log(absl::StrCat("loaded ", loaded.size(), " evaluation job(s) from ",
                                          options_.state_dir));
  }
  UpdateJobGauges();
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Evaluation> JobManager::Submit(const v1::EvaluationSpec& spec) {
  if (options_.data_root.empty()) {
    return absl::FailedPreconditionError(
        "evaluations are disabled: the server was started without --data-root");
  }
  if (spec.format() == v1::FORMAT_UNSPECIFIED || !v1::BenchmarkFormat_IsValid(spec.format())) {
    return absl::InvalidArgumentError(
        "spec.format is not set (WINOGROUND, EQBEN_PAIRS, EQBEN_VIDEO, EQBEN_AG, "
        "EQBEN_LEADERBOARD or VALSE)");
  }
  if (spec.limit() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("spec.limit must be >= 0, got ", spec.limit()));
  }
  EQSIM_ASSIGN_OR_RETURN(
      std::string annotation,
      ResolveConfinedPath(options_.data_root, spec.annotation_path(), "spec.annotation_path"));
  std::error_code ec;
  if (!fs::is_regular_file(annotation, ec)) {
    return absl::InvalidArgumentError("spec.annotation_path '" + spec.annotation_path() +
                                      "': no such file under the data root");
  }
  if (!spec.image_root().empty()) {
    EQSIM_ASSIGN_OR_RETURN(std::string root, ResolveConfinedPath(options_.data_root,
                                                                 spec.image_root(),
                                                                 "spec.image_root"));
    if (!fs::is_directory(root, ec)) {
      return absl::InvalidArgumentError("spec.image_root '" + spec.image_root() +
                                        "': no such folder under the data root");
    }
  }
  for (const auto& [dataset, root] : spec.image_roots()) {
    EQSIM_RETURN_IF_ERROR(ResolveConfinedPath(options_.data_root, root,
                                              "spec.image_roots['" + dataset + "']")
                              .status());
  }
  EQSIM_ASSIGN_OR_RETURN(auto version,
                         models_->Resolve(spec.model().name(), spec.model().version()));
  auto job = std::make_shared<Job>();
  v1::Evaluation& e = job->eval;
  e.set_id(NewJobId());
  *e.mutable_spec() = spec;
  e.mutable_model()->set_name(version->name());
  e.mutable_model()->set_version(version->version());
  e.set_state(v1::QUEUED);
  e.set_created_unix_ms(NowMs());
  v1::Evaluation snapshot;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("server is shutting down");
    jobs_[e.id()] = job;
    queue_.push_back(e.id());
    snapshot = e;
  }
  EQSIM_RETURN_IF_ERROR(Persist(snapshot));
  Log(absl::StrCat("job ", snapshot.id(), " queued: ", v1::BenchmarkFormat_Name(spec.format()),
                   " ", spec.annotation_path(), " on ", version->name(), " v",
                   version->version()));
  UpdateJobGauges();
  return snapshot;
}

absl::StatusOr<v1::Evaluation> JobManager::Get(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError("evaluation '" + id + "' not found");
  return it->second->eval;
}

std::vector<v1::Evaluation> JobManager::List(const std::vector<v1::JobState>& states) const {
  std::vector<v1::Evaluation> out;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, job] : jobs_) {
      if (!states.empty() &&
          std::find(states.begin(), states.end(), job->eval.state()) == states.end()) {
        continue;
      }
      out.push_back(job->eval);
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    if (a.created_unix_ms() != b.created_unix_ms()) return a.created_unix_ms() > b.created_unix_ms();
    return a.id() > b.id();
  });
  return out;
}

absl::StatusOr<v1::Evaluation> JobManager::Cancel(const std::string& id) {
  v1::Evaluation snapshot;
  bool publish = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return absl::NotFoundError("evaluation '" + id + "' not found");
    Job& job = *it->second;
    if (job.eval.state() == v1::QUEUED) {
      queue_.erase(std::remove(queue_.begin(), queue_.end(), id), queue_.end());
      job.eval.set_state(v1::CANCELLED);
      job.eval.set_finished_unix_ms(NowMs());
      publish = true;
    } else if (job.eval.state() == v1::RUNNING) {
      job.cancel->Cancel();  // the worker publishes CANCELLED when it stops
    }
    snapshot = job.eval;
  }
  if (publish) {
    Publish(id, snapshot, true);
    UpdateJobGauges();
  }
  Log("job " + id + ": cancel requested");
  return snapshot;
}

absl::StatusOr<std::string> JobManager::ScoresFile(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError("evaluation '" + id + "' not found");
  const v1::Evaluation& e = it->second->eval;
  if (e.state() != v1::SUCCEEDED) {
    return absl::FailedPreconditionError(absl::StrCat(
        "evaluation '", id, "' is ", v1::JobState_Name(e.state()),
        "; scores are available once it SUCCEEDED"));
  }
  if (!e.result().has_scores()) {
    return absl::FailedPreconditionError(
        "evaluation '" + id + "' kept no per-sample scores (submit it with keep_scores)");
  }
  return JobDir(id) + "/scores.npy";
}

absl::StatusOr<std::string> JobManager::ScoresBytes(const std::string& id) const {
  EQSIM_ASSIGN_OR_RETURN(std::string path, ScoresFile(id));
  if (options_.state_dir.empty()) {
    absl::MutexLock lock(&mu_);
    return jobs_.at(id)->scores;
  }
  return ReadAll(path);
}

absl::StatusOr<int64_t> JobManager::Watch(const std::string& id,
                                          std::shared_ptr<JobWatcher> watcher) {
  absl::MutexLock lock(&mu_);  // no publish can happen between the snapshot and registering
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError("evaluation '" + id + "' not found");
  absl::MutexLock wl(&watch_mu_);
  watcher->OnUpdate(it->second->eval);
  if (Terminal(it->second->eval.state())) {
    watcher->OnEnd(absl::OkStatus());
    return 0;
  }
  if (stopping_) {
    watcher->OnEnd(absl::UnavailableError("server is shutting down"));
    return 0;
  }
  const int64_t h = next_watch_++;
  watchers_[h] = {id, std::move(watcher)};
  return h;
}

void JobManager::Unwatch(int64_t handle) {
  absl::MutexLock wl(&watch_mu_);
  watchers_.erase(handle);
}

void JobManager::Publish(const std::string& id, const v1::Evaluation& snapshot, bool persist) {
  if (persist) {
    absl::Status s = Persist(snapshot);
    if (!s.ok()) Log("job " + id + ": cannot persist state: " + std::string(s.message()));
  }
  absl::MutexLock wl(&watch_mu_);
  for (auto it = watchers_.begin(); it != watchers_.end();) {
    if (it->second.job != id) {
      ++it;
      continue;
    }
    it->second.watcher->OnUpdate(snapshot);
    if (Terminal(snapshot.state())) {
      it->second.watcher->OnEnd(absl::OkStatus());
      it = watchers_.erase(it);
    } else {
      ++it;
    }
  }
}

void JobManager::UpdateJobGauges() {
  if (!metrics_) return;
  std::map<v1::JobState, int> counts;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, job] : jobs_) counts[job->eval.state()]++;
  }
  for (v1::JobState s : {v1::QUEUED, v1::RUNNING, v1::SUCCEEDED, v1::FAILED, v1::CANCELLED}) {
    metrics_->Jobs(v1::JobState_Name(s), counts[s]);
  }
}

void JobManager::WorkerLoop() {
  while (true) {
    std::shared_ptr<Job> job;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](JobManager* m) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return m->stopping_ || !m->queue_.empty();
          },
          this));
      if (stopping_) return;
      job = jobs_[queue_.front()];
      queue_.pop_front();
      ++running_;
    }
    Run(job);
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

int64_t JobManager::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

void JobManager::Run(const std::shared_ptr<Job>& job) {
  v1::Evaluation snapshot;
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    id = job->eval.id();
    job->eval.set_state(v1::RUNNING);
    if (job->eval.started_unix_ms() == 0) job->eval.set_started_unix_ms(NowMs());
    snapshot = job->eval;
  }
  Publish(id, snapshot, true);
  UpdateJobGauges();
  const v1::EvaluationSpec spec = snapshot.spec();
  const std::string chunk_dir = options_.state_dir.empty() ? "" : JobDir(id) + "/chunks";

  auto fail = [&](const absl::Status& s) {
    v1::Evaluation snap;
    {
      absl::MutexLock lock(&mu_);
      job->eval.set_state(v1::FAILED);
      job->eval.set_error(std::string(s.message()));
      job->eval.set_finished_unix_ms(NowMs());
      snap = job->eval;
    }
    Log("job " + id + " FAILED: " + std::string(s.message()));
    Publish(id, snap, true);
    if (metrics_) metrics_->JobProgress(id, -1);
    UpdateJobGauges();
  };

  // The model: the version the job started on when it is still served, else the spec's.
  auto version = models_->Resolve(snapshot.model().name(), snapshot.model().version());
  bool fresh_start = false;
  if (!version.ok()) {
    version = models_->Resolve(spec.model().name(), spec.model().version());
    if (!version.ok()) return fail(version.status());
    Log(absl::StrCat("job ", id, ": model ", snapshot.model().name(), " v",
                     snapshot.model().version(), " is no longer served; restarting on v",
                     (*version)->version()));
    fresh_start = true;
  }
  {
    absl::MutexLock lock(&mu_);
    job->eval.mutable_model()->set_name((*version)->name());
    job->eval.mutable_model()->set_version((*version)->version());
  }

  ReadOptions ro;
  auto annotation =
      ResolveConfinedPath(options_.data_root, spec.annotation_path(), "spec.annotation_path");
  if (!annotation.ok()) return fail(annotation.status());
  if (spec.image_root().empty()) {
    ro.image_root = options_.data_root;
  } else {
    auto root = ResolveConfinedPath(options_.data_root, spec.image_root(), "spec.image_root");
    if (!root.ok()) return fail(root.status());
    ro.image_root = *root;
  }
  for (const auto& [dataset, r] : spec.image_roots()) {
    auto root = ResolveConfinedPath(options_.data_root, r, "spec.image_roots['" + dataset + "']");
    if (!root.ok()) return fail(root.status());
    ro.image_roots[dataset] = *root;
  }
  ro.subsets.assign(spec.subsets().begin(), spec.subsets().end());
  ro.limit = spec.limit();
  ro.valse_all = spec.valse_all();
  auto bench = ReadBenchmark(static_cast<BenchmarkFormat>(spec.format()), *annotation, ro);
  if (!bench.ok()) return fail(bench.status());

  EvalOptions eo;
  eo.batch_size = options_.batch_size;
  eo.threads = options_.loader_threads;
  eo.chunk_size = options_.chunk_size;
  eo.max_image_bytes = options_.max_image_bytes;
  eo.keep_scores = spec.keep_scores() || spec.format() == v1::EQBEN_LEADERBOARD;
  eo.cancel = &job->cancel->cancelled;
  std::error_code ec;
  if (!chunk_dir.empty()) {
    if (fresh_start) fs::remove_all(chunk_dir, ec);
    for (fs::directory_iterator it(chunk_dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().extension() != ".json") continue;
      auto text = ReadAll(it->path().string());
      if (!text.ok()) continue;
      auto chunk = ChunkResult::FromJson(*text);
      if (!chunk.ok()) {
        Log("job " + id + ": ignoring bad chunk file " + it->path().string() + ": " +
            std::string(chunk.status().message()));
        continue;
      }
      eo.resume.push_back(std::move(*chunk));
    }
    std::sort(eo.resume.begin(), eo.resume.end(),
              [](auto& a, auto& b) { return a.chunk < b.chunk; });
    if (!eo.resume.empty()) {
      Log(absl::StrCat("job ", id, ": resuming with ", eo.resume.size(), " finished chunk(s)"));
    }
  }
  const absl::Time run_start = absl::Now();
  int64_t first_done = -1;
  int64_t last_done = 0;
  absl::Time last_publish = absl::InfinitePast();
  eo.progress = [&](int64_t done, int64_t total) {
    if (first_done < 0) first_done = done;
    if (metrics_ && done > last_done) metrics_->EvalSamples(done - last_done);
    last_done = done;
    const absl::Time now = absl::Now();
    if (done < total && now - last_publish < absl::Milliseconds(100)) return;
    last_publish = now;
    const double secs = absl::ToDoubleSeconds(now - run_start);
    const double rate = secs > 0 ? (done - first_done) / secs : 0;
    v1::Evaluation snap;
    {
      absl::MutexLock lock(&mu_);
      auto* p = job->eval.mutable_progress();
      p->set_done(done);
      p->set_total(total);
      p->set_samples_per_second(rate);
      p->set_eta_seconds(rate > 0 ? (total - done) / rate : 0);
      snap = job->eval;
    }
    if (metrics_) metrics_->JobProgress(id, total > 0 ? static_cast<double>(done) / total : 0);
    Publish(id, snap, false);
  };
  eo.on_chunk = [&](const ChunkResult& chunk) -> absl::Status {
    if (chunk_dir.empty()) return absl::OkStatus();
    EQSIM_RETURN_IF_ERROR(WriteFileAtomic(
        absl::StrFormat("%s/%08d.json", chunk_dir, chunk.chunk), chunk.ToJson()));
    v1::Evaluation snap;
    {
      absl::MutexLock lock(&mu_);
      snap = job->eval;
    }
    return Persist(snap);
  };
  BatcherSource source(inference_, *version, job->cancel);
  absl::StatusOr<EvalResult> result = Evaluate(*bench, source, eo);

  bool stopping;
  {
    absl::MutexLock lock(&mu_);
    stopping = stopping_;
  }
  if (!result.ok() && job->cancel->IsCancelled()) {
    if (stopping) {
      // Interrupted by shutdown: stays RUNNING on disk; resumes at the next start.
      v1::Evaluation snap;
      {
        absl::MutexLock lock(&mu_);
        snap = job->eval;
      }
      (void)Persist(snap);
      Log(absl::StrCat("job ", id, " interrupted by shutdown at ", snap.progress().done(), "/",
                       snap.progress().total(), "; it resumes at the next start"));
      return;
    }
    v1::Evaluation snap;
    {
      absl::MutexLock lock(&mu_);
      job->eval.set_state(v1::CANCELLED);
      job->eval.set_finished_unix_ms(NowMs());
      snap = job->eval;
    }
    Log("job " + id + " cancelled");
    Publish(id, snap, true);
    if (metrics_) metrics_->JobProgress(id, -1);
    UpdateJobGauges();
    return;
  }
  if (!result.ok()) return fail(result.status());

  v1::EvaluationResult r;
  for (const auto& s : result->subsets) ToProto(s, r.add_subsets());
  ToProto(result->overall, r.mutable_overall());
  r.mutable_overall()->set_subset("overall");
  for (size_t i = 0; i < result->skipped.size() && i < 1000; ++i) {
    auto* sk = r.add_skipped();
    sk->set_subset(result->skipped[i].subset);
    sk->set_index(result->skipped[i].index);
    sk->set_reason(result->skipped[i].reason);
  }
  std::string npy;
  if (result->has_scores) {
    auto bytes = ScoresNpyBytes(bench->kind, result->scores);
    if (!bytes.ok()) return fail(bytes.status());
    npy = std::move(*bytes);
    if (!options_.state_dir.empty()) {
      absl::Status s = WriteFileAtomic(JobDir(id) + "/scores.npy", npy);
      if (!s.ok()) return fail(s);
    }
    r.set_has_scores(true);
  }
  v1::Evaluation snap;
  {
    absl::MutexLock lock(&mu_);
    if (options_.state_dir.empty()) job->scores = std::move(npy);
    *job->eval.mutable_result() = r;
    job->eval.set_state(v1::SUCCEEDED);
    job->eval.set_finished_unix_ms(NowMs());
    auto* p = job->eval.mutable_progress();
    p->set_done(static_cast<int64_t>(bench->samples.size()));
    p->set_total(static_cast<int64_t>(bench->samples.size()));
    p->set_eta_seconds(0);
    snap = job->eval;
  }
  Log(absl::StrFormat("job %s SUCCEEDED: %d samples, group score %.4f, %.1f s", id,
                      result->overall.samples, result->overall.group_score(), result->seconds));
  Publish(id, snap, true);
  if (metrics_) metrics_->JobProgress(id, -1);
  UpdateJobGauges();
}

void JobManager::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    for (auto& [id, job] : jobs_) {
      if (job->eval.state() == v1::RUNNING) job->cancel->Cancel();
    }
  }
  for (auto& w : workers_) w.join();
  workers_.clear();
  absl::MutexLock wl(&watch_mu_);
  for (auto& [h, w] : watchers_) {
    w.watcher->OnEnd(absl::UnavailableError(
        "server is shutting down; the job resumes when it restarts (reconnect with "
        "WatchEvaluation)"));
  }
  watchers_.clear();
}

}  // namespace eqsim
