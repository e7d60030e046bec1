// eqsim-server: serves a model repository over gRPC (eqsim.v1.SimilarityService).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <algorithm>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "model/core/command_line.h"
#include "server/server.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on.");
ABSL_FLAG(int, port, 8500, "gRPC port (0 = any free port; see --port-file).");
ABSL_FLAG(std::string, port_file, "", "Write the bound gRPC port to this file once listening.");
ABSL_FLAG(int, metrics_port, 8502, "Prometheus /metrics port (0 = off).");
ABSL_FLAG(std::string, model_repository, "", "Model repository folder (required).");
ABSL_FLAG(std::string, default_model, "",
          "Model used when a request names none (default: the only model).");
ABSL_FLAG(std::string, data_root, "",
          "Evaluation benchmarks are read below this folder only (empty = evaluations off).");
ABSL_FLAG(std::string, state_dir, "",
          "Evaluation jobs and results are kept here across restarts (empty = in memory).");
ABSL_FLAG(double, poll_interval_s, 0,
          "Seconds between model repository scans for new versions (0 = load once).");
ABSL_FLAG(double, health_self_test_interval_s, 5,
          "After a failed encoder batch (health NOT_SERVING), re-run every served model's "
          "self-test this often; SERVING again once all pass (0 = off).");
ABSL_FLAG(double, drain_timeout_s, 30,
          "On SIGTERM / SIGINT, seconds to finish in-flight work before exiting.");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads per encoder call (0 = LibTorch default).");
ABSL_FLAG(int, preprocess_threads, 2, "Threads decoding images and tokenising texts.");
ABSL_FLAG(int, batch_threads, 2, "Batcher workers: encoder batches run in parallel.");
ABSL_FLAG(bool, warmup_full_batches, true,
          "Before a model version serves, run --batch-threads full batches of images and of "
          "texts through the batcher (synthetic inputs): memory is allocated before traffic "
          "arrives and the first requests are not slower.");
ABSL_FLAG(int64_t, max_message_bytes, 64 << 20, "Largest gRPC message, each way.");
ABSL_FLAG(int, max_items_per_request, 1024, "Most items in one Embed / Score request.");
ABSL_FLAG(int64_t, max_image_bytes, 32 << 20, "Largest encoded image.");
ABSL_FLAG(int64_t, max_pixels, 40000000, "Largest image (width x height, read from the header).");
ABSL_FLAG(int64_t, max_text_bytes, 64 * 1024, "Longest text in bytes.");
ABSL_FLAG(int, max_batch_size, 32, "Default items per encoder batch (model config overrides).");
ABSL_FLAG(int64_t, max_queue_delay_us, 2000,
          "Default wait for a batch to fill, microseconds (model config overrides).");
ABSL_FLAG(int, max_queue_size, 1024,
          "Default items waiting per model queue before RESOURCE_EXHAUSTED (model config "
          "overrides).");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve TLS (with --tls-key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require client certificates signed by it (mutual TLS).");
ABSL_FLAG(std::string, auth_token_file, "",
          "File holding a bearer token that every RPC but health checks must send "
          "('authorization: Bearer <token>').");
ABSL_FLAG(int, job_workers, 1, "Evaluation jobs running at the same time.");
ABSL_FLAG(int64_t, job_chunk_size, 512, "Samples per persisted chunk of an evaluation job.");
ABSL_FLAG(int64_t, job_batch_size, 64, "Items per embedding call of an evaluation job.");

int main(int argc, char** argv) {
  // Block the shutdown signals in every thread (they inherit the mask); RunServer sigwaits.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  eqsim::ParseProgramFlags(argc, argv,
      "Serves an eqsim model repository over gRPC (eqsim.v1.SimilarityService), with dynamic\n"
      "batching, hot reload, evaluation jobs, health checks, reflection and Prometheus metrics.\n"
      "  eqsim-server --model-repository=models [--port=8500] [--metrics-port=8502] ...\n"
      "Exit codes: 0 after a clean drain (SIGTERM / SIGINT), 1 start-up failure, 2 bad option.",
                           "eqsim_server_main");

  eqsim::ServerOptions o;
  o.host = absl::GetFlag(FLAGS_host);
  o.port = absl::GetFlag(FLAGS_port);
  o.port_file = absl::GetFlag(FLAGS_port_file);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  o.model_repository = absl::GetFlag(FLAGS_model_repository);
  o.default_model = absl::GetFlag(FLAGS_default_model);
  o.data_root = absl::GetFlag(FLAGS_data_root);
  o.state_dir = absl::GetFlag(FLAGS_state_dir);
  o.poll_interval_s = absl::GetFlag(FLAGS_poll_interval_s);
  o.drain_timeout_s = absl::GetFlag(FLAGS_drain_timeout_s);
  o.health_self_test_interval_s = absl::GetFlag(FLAGS_health_self_test_interval_s);
  o.warmup_full_batches = absl::GetFlag(FLAGS_warmup_full_batches);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.preprocess_threads = absl::GetFlag(FLAGS_preprocess_threads);
  o.batch_threads = absl::GetFlag(FLAGS_batch_threads);
  o.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o.max_items_per_request = absl::GetFlag(FLAGS_max_items_per_request);
  o.max_image_bytes = absl::GetFlag(FLAGS_max_image_bytes);
  o.max_pixels = absl::GetFlag(FLAGS_max_pixels);
  o.max_text_bytes = absl::GetFlag(FLAGS_max_text_bytes);
  o.batching.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  o.batching.max_queue_delay = absl::Microseconds(absl::GetFlag(FLAGS_max_queue_delay_us));
  o.batching.max_queue_size = absl::GetFlag(FLAGS_max_queue_size);
  o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key = absl::GetFlag(FLAGS_tls_key);
  o.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  o.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  o.job_workers = absl::GetFlag(FLAGS_job_workers);
  o.job_chunk_size = absl::GetFlag(FLAGS_job_chunk_size);
  o.job_batch_size = absl::GetFlag(FLAGS_job_batch_size);

  const char* bad = nullptr;
  if (o.port < 0 || o.port > 65535) bad = "--port must be in 0..65535";
  if (o.metrics_port < 0 || o.metrics_port > 65535) bad = "--metrics-port must be in 0..65535";
  if (o.batching.max_batch_size < 1) bad = "--max-batch-size must be >= 1";
  if (o.batching.max_queue_size < 1) bad = "--max-queue-size must be >= 1";
  if (o.batching.max_queue_delay < absl::ZeroDuration()) bad = "--max-queue-delay-us must be >= 0";
  if (o.max_items_per_request < 1) bad = "--max-items-per-request must be >= 1";
  if (o.max_message_bytes < 1024) bad = "--max-message-bytes must be >= 1024";
  if (o.drain_timeout_s < 0) bad = "--drain-timeout-s must be >= 0";
  if (o.poll_interval_s < 0) bad = "--poll-interval-s must be >= 0";
  if (o.health_self_test_interval_s < 0) bad = "--health-self-test-interval-s must be >= 0";
  if (o.job_chunk_size < 1 || o.job_batch_size < 1) {
    bad = "--job-chunk-size and --job-batch-size must be >= 1";
  }
  if (bad) {
    std::fprintf(stderr, "eqsim-server: %s\n", bad);
    return 2;
  }
  return eqsim::RunServer(o);
}
