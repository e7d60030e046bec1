#include "server/service.h"

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/status_map.h"

namespace eqsim {

// ---------------------------------------------------------------- health

void HealthState::Bind(std::function<void(bool)> apply) {
  absl::MutexLock lock(&mu_);
  apply_ = std::move(apply);
  last_ = -1;
  Update();
}
void HealthState::SetModelsReady(bool ready) {
  absl::MutexLock lock(&mu_);
  models_ready_ = ready;
  Update();
}
void HealthState::SetDraining() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  Update();
}
void HealthState::InferenceResult(bool ok) {
  absl::MutexLock lock(&mu_);
  if (!ok) last_failure_ = absl::Now();
  if (inference_ok_ == ok) return;
  inference_ok_ = ok;
  Update();
}
bool HealthState::serving() const {
  absl::MutexLock lock(&mu_);
  return models_ready_ && !draining_ && inference_ok_;
}
bool HealthState::inference_ok() const {
  absl::MutexLock lock(&mu_);
  return inference_ok_;
}
absl::Time HealthState::last_inference_failure() const {
  absl::MutexLock lock(&mu_);
  return last_failure_;
}
bool HealthState::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}
void HealthState::Update() {
  const int now = (models_ready_ && !draining_ && inference_ok_) ? 1 : 0;
  if (now == last_) return;
  last_ = now;
  std::fprintf(stderr, "[eqsim-server] health: %s%s%s%s\n", now ? "SERVING" : "NOT_SERVING",
               models_ready_ ? "" : " (models not ready)", draining_ ? " (draining)" : "",
               inference_ok_ ? "" : " (last inference failed)");
  if (apply_) apply_(now == 1);
}

// ---------------------------------------------------------------- helpers

namespace {

absl::Time DeadlineOf(grpc::CallbackServerContext* ctx) {
  auto d = ctx->deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

void FillModel(const ServingVersion& v, v1::ModelRef* out) {
  out->set_name(v.name());
  out->set_version(v.version());
}

}  // namespace

// A unary call that completes asynchronously; records its metrics; cancels its queued work
// when the client goes away.
class SimilarityServiceImpl::UnaryReactor : public grpc::ServerUnaryReactor {
 public:
  UnaryReactor(SimilarityServiceImpl* service, const char* method)
      : service_(service), method_(method), start_(absl::Now()) {
    service_->in_flight_++;
  }
  void Done(const absl::Status& status) {
    if (service_->metrics_) {
      service_->metrics_->Request(method_, absl::StatusCodeToString(status.code()),
                                  absl::ToDoubleSeconds(absl::Now() - start_));
    }
    Finish(ToGrpcStatus(status));
  }
  void OnCancel() override {
    cancel_->Cancel();
    if (service_->batcher_) service_->batcher_->Notify();
  }
  void OnDone() override {
    service_->in_flight_--;
    delete this;
  }
  std::shared_ptr<CancelToken> cancel() const { return cancel_; }

 private:
  SimilarityServiceImpl* service_;
  const char* method_;
  absl::Time start_;
  std::shared_ptr<CancelToken> cancel_ = std::make_shared<CancelToken>();
};

SimilarityServiceImpl::SimilarityServiceImpl(ServiceOptions options, ModelManager* models,
                                             Inference* inference, JobManager* jobs,
                                             Batcher* batcher, Metrics* metrics,
                                             HealthState* health)
    : options_(std::move(options)),
      models_(models),
      inference_(inference),
      jobs_(jobs),
      batcher_(batcher),
      metrics_(metrics),
      health_(health) {}

absl::Status SimilarityServiceImpl::CheckAuth(grpc::CallbackServerContext* ctx) const {
  if (options_.auth_token.empty()) return absl::OkStatus();
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return absl::UnauthenticatedError(
        "this server requires a bearer token: send metadata 'authorization: Bearer <token>'");
  }
  const std::string got(it->second.data(), it->second.size());
  const std::string want = "Bearer " + options_.auth_token;
  // Constant-time comparison.
  unsigned diff = got.size() != want.size();
  for (size_t i = 0; i < want.size(); ++i) diff |= (i < got.size() ? got[i] : 0) ^ want[i];
  if (diff != 0) return absl::UnauthenticatedError("the bearer token is not valid");
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::FinishNow(grpc::CallbackServerContext* ctx,
                                                           const char* method,
                                                           const absl::Status& status) {
  auto* r = new UnaryReactor(this, method);
  r->Done(status);
  return r;
}

// ---------------------------------------------------------------- Embed / Score

grpc::ServerUnaryReactor* SimilarityServiceImpl::Embed(grpc::CallbackServerContext* ctx,
                                                       const v1::EmbedRequest* req,
                                                       v1::EmbedResponse* resp) {
  auto* reactor = new UnaryReactor(this, "Embed");
  absl::Status s = CheckAuth(ctx);
  if (s.ok() && health_ && health_->draining()) s = absl::UnavailableError("server is draining");
  absl::StatusOr<std::shared_ptr<const ServingVersion>> version;
  if (s.ok()) {
    version = models_->Resolve(req->model().name(), req->model().version());
    s = version.status();
  }
  std::vector<ItemRef> items;
  for (int i = 0; s.ok() && i < req->items_size(); ++i) {
    const auto& it = req->items(i);
    if (it.content_case() == v1::Item::kImage) {
      items.push_back({true, it.image()});
    } else if (it.content_case() == v1::Item::kText) {
      items.push_back({false, it.text()});
    } else {
      s = absl::InvalidArgumentError(absl::StrCat("item ", i, ": neither image nor text is set"));
    }
  }
  if (!s.ok()) {
    reactor->Done(s);
    return reactor;
  }
  CallOptions o;
  o.deadline = DeadlineOf(ctx);
  o.cancel = reactor->cancel();
  const bool normalize = !req->unnormalized();
  std::shared_ptr<const ServingVersion> v = *version;
  inference_->Embed(v, std::move(items), std::move(o),
                    [reactor, resp, normalize, v](absl::StatusOr<Matrix> m) {
                      if (!m.ok()) return reactor->Done(m.status());
                      if (normalize) L2NormalizeRows(*m);
                      FillModel(*v, resp->mutable_model());
                      resp->set_dim(static_cast<int32_t>(m->cols));
                      for (int64_t r = 0; r < m->rows; ++r) {
                        auto* e = resp->add_embeddings()->mutable_values();
                        e->Add(m->row(r), m->row(r) + m->cols);
                      }
                      reactor->Done(absl::OkStatus());
                    });
  return reactor;
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::Score(grpc::CallbackServerContext* ctx,
                                                       const v1::ScoreRequest* req,
                                                       v1::ScoreResponse* resp) {
  auto* reactor = new UnaryReactor(this, "Score");
  absl::Status s = CheckAuth(ctx);
  if (s.ok() && health_ && health_->draining()) s = absl::UnavailableError("server is draining");
  const bool pairwise = req->mode() == v1::ScoreRequest::PAIRWISE;
  if (s.ok() && (req->images_size() == 0 || req->texts_size() == 0)) {
    s = absl::InvalidArgumentError(absl::StrFormat(
        "Score needs at least one image and one text, got %d images and %d texts",
        req->images_size(), req->texts_size()));
  }
  if (s.ok() && pairwise && req->images_size() != req->texts_size()) {
    s = absl::InvalidArgumentError(absl::StrFormat(
        "PAIRWISE needs as many images as texts, got %d images and %d texts",
        req->images_size(), req->texts_size()));
  }
  if (s.ok() && pairwise && req->softmax()) {
    s = absl::InvalidArgumentError("softmax is only defined for MATRIX mode");
  }
  absl::StatusOr<std::shared_ptr<const ServingVersion>> version;
  if (s.ok()) {
    version = models_->Resolve(req->model().name(), req->model().version());
    s = version.status();
  }
  if (!s.ok()) {
    reactor->Done(s);
    return reactor;
  }
  // Items are numbered images first, then texts, as in an Embed request.
  std::vector<ItemRef> items;
  for (const auto& im : req->images()) items.push_back({true, im});
  for (const auto& t : req->texts()) items.push_back({false, t});
  CallOptions o;
  o.deadline = DeadlineOf(ctx);
  o.cancel = reactor->cancel();
  const int n_images = req->images_size();
  const bool softmax = req->softmax();
  std::shared_ptr<const ServingVersion> v = *version;
  inference_->Embed(
      v, std::move(items), std::move(o),
      [reactor, resp, v, n_images, pairwise, softmax](absl::StatusOr<Matrix> m) {
        if (!m.ok()) {
          absl::Status st = m.status();
          return reactor->Done(st);
        }
        Matrix img(n_images, m->cols), txt(m->rows - n_images, m->cols);
        std::copy(m->data.begin(), m->data.begin() + img.data.size(), img.data.begin());
        std::copy(m->data.begin() + img.data.size(), m->data.end(), txt.data.begin());
        auto r = ComputeScores(std::move(img), std::move(txt),
                               v->model->encoder->logit_scale(), pairwise, softmax);
        if (!r.ok()) return reactor->Done(r.status());
        FillModel(*v, resp->mutable_model());
        resp->set_rows(r->rows);
        resp->set_cols(r->cols);
        resp->mutable_cosine()->Add(r->cosine.begin(), r->cosine.end());
        resp->mutable_logits()->Add(r->logits.begin(), r->logits.end());
        resp->mutable_probs()->Add(r->probs.begin(), r->probs.end());
        resp->set_logit_scale(r->scale);
        reactor->Done(absl::OkStatus());
      });
  return reactor;
}

// ---------------------------------------------------------------- jobs

// Streams a job's snapshots. The JobManager calls OnUpdate / OnEnd (under its watcher lock);
// writes are coalesced: while one write is in flight only the newest snapshot is kept.
class SimilarityServiceImpl::WatchReactor : public grpc::ServerWriteReactor<v1::EvaluationEvent> {
 public:
  struct Sink : public JobWatcher {
    absl::Mutex mu;
    WatchReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
    void OnUpdate(const v1::Evaluation& e) override {
      absl::MutexLock lock(&mu);
      if (!reactor) return;
      reactor->pending_ = e;
      reactor->has_pending_ = true;
      reactor->MaybeWriteLocked();
    }
    void OnEnd(const absl::Status& s) override {
      absl::MutexLock lock(&mu);
      if (!reactor) return;
      reactor->end_ = s;
      reactor->ended_ = true;
      reactor->MaybeWriteLocked();
    }
  };

  WatchReactor(SimilarityServiceImpl* service, const char* method)
      : service_(service), method_(method), sink_(std::make_shared<Sink>()) {
    service_->in_flight_++;
    absl::MutexLock lock(&sink_->mu);
    sink_->reactor = this;
  }
  std::shared_ptr<Sink> sink() { return sink_; }
  void SetHandle(int64_t h) {
    absl::MutexLock lock(&sink_->mu);
    handle_ = h;
  }
  void FinishWith(const absl::Status& s) {
    absl::MutexLock lock(&sink_->mu);
    end_ = s;
    ended_ = true;
    MaybeWriteLocked();
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&sink_->mu);
    writing_ = false;
    if (!ok && !finished_) {
      finished_ = true;
      Record(absl::CancelledError("client went away"));
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed: client went away"));
      return;
    }
    MaybeWriteLocked();
  }
  void OnCancel() override {
    absl::MutexLock lock(&sink_->mu);
    if (finished_) return;
    finished_ = true;
    Record(absl::CancelledError("cancelled by the client"));
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
  }
  void OnDone() override {
    int64_t h;
    {
      absl::MutexLock lock(&sink_->mu);
      sink_->reactor = nullptr;
      h = handle_;
    }
    if (h > 0 && service_->jobs_) service_->jobs_->Unwatch(h);
    service_->in_flight_--;
    delete this;
  }

 private:
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sink_->mu) {
    if (finished_ || writing_) return;
    if (has_pending_) {
      *event_.mutable_evaluation() = pending_;
      has_pending_ = false;
      writing_ = true;
      StartWrite(&event_);
      return;
    }
    if (ended_) {
      finished_ = true;
      Record(end_);
      Finish(ToGrpcStatus(end_));
    }
  }
  void Record(const absl::Status& s) {
    if (service_->metrics_) {
      service_->metrics_->Request(method_, absl::StatusCodeToString(s.code()), -1);
    }
  }

  SimilarityServiceImpl* service_;
  const char* method_;
  std::shared_ptr<Sink> sink_;
  v1::EvaluationEvent event_;
  v1::Evaluation pending_;
  bool has_pending_ = false;
  bool writing_ = false;
  bool ended_ = false;
  bool finished_ = false;
  absl::Status end_;
  int64_t handle_ = 0;
};

grpc::ServerWriteReactor<v1::EvaluationEvent>* SimilarityServiceImpl::StartWatch(
    grpc::CallbackServerContext* ctx, const char* method, const std::string& id) {
  auto* r = new WatchReactor(this, method);
  auto h = jobs_->Watch(id, r->sink());
  if (!h.ok()) {
    r->FinishWith(h.status());
  } else {
    r->SetHandle(*h);
  }
  return r;
}

grpc::ServerWriteReactor<v1::EvaluationEvent>* SimilarityServiceImpl::EvaluateBenchmark(
    grpc::CallbackServerContext* ctx, const v1::EvaluateBenchmarkRequest* req) {
  absl::Status s = CheckAuth(ctx);
  if (s.ok() && health_ && health_->draining()) s = absl::UnavailableError("server is draining");
  absl::StatusOr<v1::Evaluation> job;
  if (s.ok()) {
    job = jobs_->Submit(req->spec());
    s = job.status();
  }
  if (!s.ok()) {
    auto* r = new WatchReactor(this, "EvaluateBenchmark");
    r->FinishWith(s);
    return r;
  }
  return StartWatch(ctx, "EvaluateBenchmark", job->id());
}

grpc::ServerWriteReactor<v1::EvaluationEvent>* SimilarityServiceImpl::WatchEvaluation(
    grpc::CallbackServerContext* ctx, const v1::WatchEvaluationRequest* req) {
  absl::Status s = CheckAuth(ctx);
  if (!s.ok()) {
    auto* r = new WatchReactor(this, "WatchEvaluation");
    r->FinishWith(s);
    return r;
  }
  return StartWatch(ctx, "WatchEvaluation", req->id());
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::GetEvaluation(grpc::CallbackServerContext* ctx,
                                                               const v1::GetEvaluationRequest* req,
                                                               v1::Evaluation* resp) {
  absl::Status s = CheckAuth(ctx);
  if (s.ok()) {
    auto e = jobs_->Get(req->id());
    s = e.status();
    if (e.ok()) *resp = std::move(*e);
  }
  return FinishNow(ctx, "GetEvaluation", s);
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::ListEvaluations(
    grpc::CallbackServerContext* ctx, const v1::ListEvaluationsRequest* req,
    v1::ListEvaluationsResponse* resp) {
  absl::Status s = CheckAuth(ctx);
  if (s.ok()) {
    std::vector<v1::JobState> states;
    for (int st : req->states()) states.push_back(static_cast<v1::JobState>(st));
    for (auto& e : jobs_->List(states)) *resp->add_evaluations() = std::move(e);
  }
  return FinishNow(ctx, "ListEvaluations", s);
}

grpc::ServerUnaryReactor* SimilarityServiceImpl::CancelEvaluation(
    grpc::CallbackServerContext* ctx, const v1::CancelEvaluationRequest* req,
    v1::Evaluation* resp) {
  absl::Status s = CheckAuth(ctx);
  if (s.ok()) {
    auto e = jobs_->Cancel(req->id());
    s = e.status();
    if (e.ok()) *resp = std::move(*e);
  }
  return FinishNow(ctx, "CancelEvaluation", s);
}

// Streams the score file in chunks, one write at a time.
class SimilarityServiceImpl::ScoresReactor : public grpc::ServerWriteReactor<v1::ScoresChunk> {
 public:
  ScoresReactor(SimilarityServiceImpl* service, absl::StatusOr<std::string> data,
                int64_t chunk_bytes)
      : service_(service), chunk_(std::max<int64_t>(1024, chunk_bytes)) {
    service_->in_flight_++;
    if (!data.ok()) {
      Done(data.status());
      return;
    }
    data_ = std::move(*data);
    Next();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return Done(absl::CancelledError("client went away"));
    Next();
  }
  void OnDone() override {
    service_->in_flight_--;
    delete this;
  }

 private:
  void Next() {
    if (offset_ >= data_.size() && offset_ > 0) return Done(absl::OkStatus());
    const size_t n = std::min<size_t>(chunk_, data_.size() - offset_);
    msg_.set_data(data_.substr(offset_, n));
    msg_.set_total_bytes(static_cast<int64_t>(data_.size()));
    offset_ += n;
    if (n == 0) offset_ = 1;  // an empty file: one empty chunk, then done
    StartWrite(&msg_);
  }
  void Done(const absl::Status& s) {
    if (service_->metrics_) {
      service_->metrics_->Request("GetEvaluationScores", absl::StatusCodeToString(s.code()), -1);
    }
    Finish(ToGrpcStatus(s));
  }
  SimilarityServiceImpl* service_;
  size_t chunk_;
  std::string data_;
  size_t offset_ = 0;
  v1::ScoresChunk msg_;
};

grpc::ServerWriteReactor<v1::ScoresChunk>* SimilarityServiceImpl::GetEvaluationScores(
    grpc::CallbackServerContext* ctx, const v1::GetEvaluationScoresRequest* req) {
  absl::Status s = CheckAuth(ctx);
  if (!s.ok()) return new ScoresReactor(this, s, 0);
  return new ScoresReactor(this, jobs_->ScoresBytes(req->id()), 1 << 20);
}

// ---------------------------------------------------------------- models

grpc::ServerUnaryReactor* SimilarityServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                            const v1::ListModelsRequest* req,
                                                            v1::ListModelsResponse* resp) {
  absl::Status s = CheckAuth(ctx);
  if (s.ok()) {
    for (const auto& m : models_->List()) {
      auto* o = resp->add_models();
      o->set_name(m.name);
      o->set_version(m.version);
      o->set_dim(m.dim);
      o->set_state(static_cast<v1::ModelStatus::State>(m.state));
      o->set_reason(m.reason);
      o->set_backend(m.backend);
      o->set_device(m.device);
      o->set_tokenizer(m.tokenizer);
      o->set_image_size(m.image_size);
    }
    resp->set_default_model(models_->DefaultModel());
  }
  return FinishNow(ctx, "ListModels", s);
}

}  // namespace eqsim
