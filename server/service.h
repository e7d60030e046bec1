// eqsim.v1.SimilarityService on gRPC's callback API: handlers never block a gRPC thread;
// unary calls complete from the batcher's threads, streams are ServerWriteReactors fed by the
// JobManager.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "eqsim/v1/similarity.grpc.pb.h"
#include "server/inference.h"
#include "server/job_manager.h"
#include "server/metrics.h"
#include "server/model_manager.h"

namespace eqsim {

// Serving status as health checks see it: SERVING when models are loaded and warmed up, the
// server is not draining and the last encoder batch succeeded.
class HealthState {
 public:
  // `apply(serving)` is called whenever the combined status changes (and once at Bind).
  void Bind(std::function<void(bool serving)> apply);
  void SetModelsReady(bool ready);
  void SetDraining();
  void InferenceResult(bool ok);
  bool serving() const;
  bool draining() const;
  bool inference_ok() const;  // false from a failed encoder batch until one succeeds
  absl::Time last_inference_failure() const;  // InfinitePast() if none

 private:
  void Update() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  mutable absl::Mutex mu_;
  std::function<void(bool)> apply_ ABSL_GUARDED_BY(mu_);
  bool models_ready_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool inference_ok_ ABSL_GUARDED_BY(mu_) = true;
  absl::Time last_failure_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int last_ ABSL_GUARDED_BY(mu_) = -1;
};

struct ServiceOptions {
  std::string auth_token;  // "" = no authentication
};

class SimilarityServiceImpl final : public v1::SimilarityService::CallbackService {
 public:
  SimilarityServiceImpl(ServiceOptions options, ModelManager* models, Inference* inference,
                        JobManager* jobs, Batcher* batcher, Metrics* metrics,
                        HealthState* health);

  grpc::ServerUnaryReactor* Embed(grpc::CallbackServerContext* ctx, const v1::EmbedRequest* req,
                                  v1::EmbedResponse* resp) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* ctx, const v1::ScoreRequest* req,
                                  v1::ScoreResponse* resp) override;
  grpc::ServerWriteReactor<v1::EvaluationEvent>* EvaluateBenchmark(
      grpc::CallbackServerContext* ctx, const v1::EvaluateBenchmarkRequest* req) override;
  grpc::ServerUnaryReactor* GetEvaluation(grpc::CallbackServerContext* ctx,
                                          const v1::GetEvaluationRequest* req,
                                          v1::Evaluation* resp) override;
  grpc::ServerWriteReactor<v1::EvaluationEvent>* WatchEvaluation(
      grpc::CallbackServerContext* ctx, const v1::WatchEvaluationRequest* req) override;
  grpc::ServerUnaryReactor* ListEvaluations(grpc::CallbackServerContext* ctx,
                                            const v1::ListEvaluationsRequest* req,
                                            v1::ListEvaluationsResponse* resp) override;
  grpc::ServerUnaryReactor* CancelEvaluation(grpc::CallbackServerContext* ctx,
                                             const v1::CancelEvaluationRequest* req,
                                             v1::Evaluation* resp) override;
  grpc::ServerWriteReactor<v1::ScoresChunk>* GetEvaluationScores(
      grpc::CallbackServerContext* ctx, const v1::GetEvaluationScoresRequest* req) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const v1::ListModelsRequest* req,
                                       v1::ListModelsResponse* resp) override;

  // Calls in flight (all methods), for draining.
  int64_t in_flight() const { return in_flight_.load(); }

 private:
  class UnaryReactor;
  class WatchReactor;
  class ScoresReactor;
  // OK, or UNAUTHENTICATED when a token is required and missing / wrong.
  absl::Status CheckAuth(grpc::CallbackServerContext* ctx) const;
  grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* ctx, const char* method,
                                      const absl::Status& status);
  grpc::ServerWriteReactor<v1::EvaluationEvent>* StartWatch(grpc::CallbackServerContext* ctx,
                                                           const char* method,
                                                           const std::string& id);

  const ServiceOptions options_;
  ModelManager* models_;
  Inference* inference_;
  JobManager* jobs_;
  Batcher* batcher_;
  Metrics* metrics_;
  HealthState* health_;
  std::atomic<int64_t> in_flight_{0};
};

}  // namespace eqsim
