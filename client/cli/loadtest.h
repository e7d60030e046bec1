// The load generator behind `eqsim loadtest`: drives Embed (images, texts) and Score at a
// fixed concurrency (closed loop) or a fixed arrival rate (open loop, latency measured from
// the scheduled start so queueing behind a slow server is not hidden), for a duration, with a
// request mix, and reports throughput, exact latency percentiles and errors by code.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"

namespace eqsim::cli {

struct LoadMix {
  double image = 0.4;  // Embed with images_per_request images
  double text = 0.4;   // Embed with texts_per_request texts
  double score = 0.2;  // Score MATRIX images_per_request x texts_per_request
};
// "image=0.4,text=0.4,score=0.2" (weights, normalised; missing kinds are 0).
absl::StatusOr<LoadMix> ParseMix(const std::string& spec);

struct LoadtestOptions {
  int concurrency = 8;       // workers = requests in flight at most
  double rate = 0;           // requests per second; 0 = closed loop (back to back)
  absl::Duration duration = absl::Seconds(30);
  absl::Duration warmup = absl::ZeroDuration();  // requests in this first period not counted
  LoadMix mix;
  int images_per_request = 1;
  int texts_per_request = 1;
  std::vector<std::string> images;  // encoded image pool (required for image / score)
  std::vector<std::string> texts;   // text pool (required for text / score)
  ModelSelector model;
  uint64_t seed = 1;
  int server_pid = 0;  // > 0: sample this process's RSS (same machine) during the run
  absl::Duration rss_sample_every = absl::Seconds(60);  // time series in the report
  // Called about every `progress_every` with the measured part so far.
  std::function<void(absl::Duration elapsed, int64_t requests, int64_t errors, double p50_ms)>
      progress;
  absl::Duration progress_every = absl::Seconds(1);
};

struct LatencyStats {
  int64_t requests = 0;
  int64_t ok = 0;
  int64_t errors = 0;
  int64_t items = 0;  // items in successful requests
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0, mean_ms = 0;  // successful requests
};

struct LoadtestReport {
  double seconds = 0;  // measured period
  int concurrency = 0;
  double rate = 0;
  LoadMix mix;
  std::map<std::string, LatencyStats> by_kind;  // "image", "text", "score"
  LatencyStats all;
  double throughput_rps = 0;  // successful requests per second
  double items_per_second = 0;
  std::map<std::string, int64_t> errors_by_code;         // "UNAVAILABLE" -> n
  std::map<std::string, std::string> first_error_by_code;  // an example message
  int64_t late_starts = 0;  // open loop: requests started > 10 ms after their slot
  // Server RSS (KiB) when --server-pid was given; -1 otherwise. `before`: before any request;
  // `start`: when the measured period starts (after the warm-up); `end`: after the last request.
  int64_t rss_before_kib = -1, rss_start_kib = -1, rss_end_kib = -1, rss_max_kib = -1;
  // (seconds since the load started, KiB) every rss_sample_every, start and end included.
  std::vector<std::pair<double, int64_t>> rss_samples;
};

// `client` should be configured without retries so errors are counted, not hidden.
absl::StatusOr<LoadtestReport> RunLoadtest(Client& client, const LoadtestOptions& options);

// Exact percentile (nearest rank) of sorted values; 0 for none.
double Percentile(const std::vector<double>& sorted, double p);

std::string ReportToText(const LoadtestReport& report);
std::string ReportToJson(const LoadtestReport& report);

// VmRSS of a process in KiB from /proc/<pid>/status, or -1.
int64_t ReadRssKib(int pid);

}  // namespace eqsim::cli
