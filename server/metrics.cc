#include "server/metrics.h"

#include <exception>

namespace eqsim {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}
Histogram::BucketBoundaries SizeBuckets() { return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}; }

}  // namespace

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(BuildCounter()
                    .Name("eqsim_requests_total")
                    .Help("RPCs finished, by method and gRPC status code")
                    .Register(*registry_)),
      latency_(BuildHistogram()
                   .Name("eqsim_request_duration_seconds")
                   .Help("RPC latency from arrival to response, by method")
                   .Register(*registry_)),
      queue_time_(BuildHistogram()
                      .Name("eqsim_queue_duration_seconds")
                      .Help("Time a batch task waited in its model queue before compute")
                      .Register(*registry_)),
      compute_time_(BuildHistogram()
                        .Name("eqsim_compute_duration_seconds")
                        .Help("Encoder time per batch")
                        .Register(*registry_)),
      batch_size_(BuildHistogram()
                      .Name("eqsim_batch_size")
                      .Help("Items per encoder batch")
                      .Register(*registry_)),
      queue_depth_(BuildGauge()
                       .Name("eqsim_queue_depth")
                       .Help("Items waiting in a model queue")
                       .Register(*registry_)),
      preprocess_failures_(BuildCounter()
                               .Name("eqsim_preprocess_failures_total")
                               .Help("Items refused by image decoding or tokenisation")
                               .Register(*registry_)),
      inference_failures_(BuildCounter()
                              .Name("eqsim_inference_failures_total")
                              .Help("Encoder batches that failed")
                              .Register(*registry_)),
      model_loads_(BuildCounter()
                       .Name("eqsim_model_loads_total")
                       .Help("Model version loads, by result (ok or error)")
                       .Register(*registry_)),
      model_ready_(BuildGauge()
                       .Name("eqsim_model_ready")
                       .Help("1 while a model version is being served")
                       .Register(*registry_)),
      jobs_(BuildGauge()
                .Name("eqsim_jobs")
                .Help("Evaluation jobs by state")
                .Register(*registry_)),
      job_progress_(BuildGauge()
                        .Name("eqsim_job_progress_ratio")
                        .Help("Fraction of samples scored, for running evaluation jobs")
                        .Register(*registry_)),
      eval_samples_(BuildCounter()
                        .Name("eqsim_eval_samples_total")
                        .Help("Samples scored by evaluation jobs")
                        .Register(*registry_)
                        .Add({})) {
  for (const char* s : {"QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"}) {
    jobs_.Add({{"state", s}}).Set(0);
  }
}

bool Metrics::Serve(const std::string& host, int port, std::string* error) {
  if (port <= 0) return true;
  auto server = MetricsHttpServer::Start(host, port, registry_);
  if (!server.ok()) {
    *error = std::string(server.status().message());
    return false;
  }
  http_ = *std::move(server);
  return true;
}

void Metrics::Request(const std::string& method, const std::string& code, double seconds) {
  requests_.Add({{"method", method}, {"code", code}}).Increment();
  if (seconds >= 0) latency_.Add({{"method", method}}, LatencyBuckets()).Observe(seconds);
}

void Metrics::QueueTime(const std::string& model, const std::string& modality, double seconds) {
  queue_time_.Add({{"model", model}, {"modality", modality}}, LatencyBuckets()).Observe(seconds);
}

void Metrics::Batch(const std::string& model, const std::string& modality, int items,
                    double seconds) {
  batch_size_.Add({{"model", model}, {"modality", modality}}, SizeBuckets()).Observe(items);
  compute_time_.Add({{"model", model}, {"modality", modality}}, LatencyBuckets())
      .Observe(seconds);
}

void Metrics::QueueDepth(const std::string& queue, int depth) {
  queue_depth_.Add({{"queue", queue}}).Set(depth);
}

void Metrics::PreprocessFailure(const std::string& modality) {
  preprocess_failures_.Add({{"modality", modality}}).Increment();
}

void Metrics::InferenceFailure(const std::string& model) {
  inference_failures_.Add({{"model", model}}).Increment();
}

void Metrics::ModelLoad(const std::string& model, bool ok) {
  model_loads_.Add({{"model", model}, {"result", ok ? "ok" : "error"}}).Increment();
}

void Metrics::ModelReady(const std::string& model, int64_t version, bool ready) {
  absl::MutexLock lock(&mu_);
  auto& g = model_ready_.Add({{"model", model}, {"version", std::to_string(version)}});
  if (ready) {
    g.Set(1);
  } else {
    model_ready_.Remove(&g);
  }
}

void Metrics::Jobs(const std::string& state, int count) {
  jobs_.Add({{"state", state}}).Set(count);
}

void Metrics::JobProgress(const std::string& job, double ratio) {
  absl::MutexLock lock(&mu_);
  auto& g = job_progress_.Add({{"job", job}});
  if (ratio < 0) {
    job_progress_.Remove(&g);
  } else {
    g.Set(ratio);
  }
}

void Metrics::EvalSamples(int64_t n) { eval_samples_.Increment(static_cast<double>(n)); }

}  // namespace eqsim
