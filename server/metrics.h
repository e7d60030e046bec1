// Prometheus metrics of the server (prometheus-cpp registry), served as GET /metrics on
// --metrics-port by MetricsHttpServer (server/metrics_http.h says why not prometheus::Exposer). Names:
//   eqsim_requests_total{method,code}             RPCs finished, by gRPC code name
//   eqsim_request_duration_seconds{method}        RPC latency (unary RPCs)
//   eqsim_queue_duration_seconds{model,modality}  time a batch task waited in its queue
//   eqsim_compute_duration_seconds{model,modality} encoder time per batch
//   eqsim_batch_size{model,modality}              items per encoder batch
//   eqsim_queue_depth{queue}                      items waiting
//   eqsim_preprocess_failures_total{modality}     items refused by decode / tokenisation
//   eqsim_inference_failures_total{model}         encoder errors
//   eqsim_model_loads_total{model,result}         version loads (result = ok | error)
//   eqsim_model_ready{model,version}              1 while a version serves
//   eqsim_jobs{state}                             evaluation jobs by state
//   eqsim_job_progress_ratio{job}                 done / total of running jobs
//   eqsim_eval_samples_total                      samples scored by evaluation jobs
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/metrics_http.h"

namespace eqsim {

class Metrics {
 public:
  Metrics();
  // Serves GET /metrics on host:port (port 0 = do not serve) from a background thread.
  // Returns false and sets *error when the port cannot be bound.
  bool Serve(const std::string& host, int port, std::string* error);

  void Request(const std::string& method, const std::string& code, double seconds);
  void QueueTime(const std::string& model, const std::string& modality, double seconds);
  void Batch(const std::string& model, const std::string& modality, int items, double seconds);
  void QueueDepth(const std::string& queue, int depth);
  void PreprocessFailure(const std::string& modality);
  void InferenceFailure(const std::string& model);
  void ModelLoad(const std::string& model, bool ok);
  void ModelReady(const std::string& model, int64_t version, bool ready);
  void Jobs(const std::string& state, int count);
  void JobProgress(const std::string& job, double ratio);  // < 0 removes the series
  void EvalSamples(int64_t n);

  std::shared_ptr<prometheus::Registry> registry() { return registry_; }
  // The bound metrics port (after Serve with port 0), or 0 when not serving.
  int port() const { return http_ ? http_->port() : 0; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsHttpServer> http_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Histogram>& queue_time_;
  prometheus::Family<prometheus::Histogram>& compute_time_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Counter>& preprocess_failures_;
  prometheus::Family<prometheus::Counter>& inference_failures_;
  prometheus::Family<prometheus::Counter>& model_loads_;
  prometheus::Family<prometheus::Gauge>& model_ready_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Family<prometheus::Gauge>& job_progress_;
  prometheus::Counter& eval_samples_;
  absl::Mutex mu_;  // serialises Add/Remove on families with removable series
};

}  // namespace eqsim
