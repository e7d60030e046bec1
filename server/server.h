// Assembles eqsim-server: metrics, batcher, preprocessing pool, model manager, jobs, the gRPC
// service with health checking and reflection; then serves until SIGTERM / SIGINT and drains.
#pragma once

#include <cstdint>
#include <string>

#include "server/batcher.h"

namespace eqsim {

struct ServerOptions {
  std::string host = "0.0.0.0";
  int port = 8500;                // 0 = pick a free port (see port_file)
  std::string port_file;          // written with the bound port once listening
  int metrics_port = 8502;        // 0 = no metrics endpoint
  std::string model_repository;
  std::string default_model;
  std::string data_root;
  std::string state_dir;
  double poll_interval_s = 0;     // 0 = no polling
  double drain_timeout_s = 30;
  // While health is NOT_SERVING because an encoder batch failed, every this many seconds the
  // served models run their self-test (one image, one text); when all pass, SERVING again.
  double health_self_test_interval_s = 5;  // 0 = never (stays NOT_SERVING until a batch works)
  int threads = 0;                // LibTorch intra-op threads (0 = LibTorch's default)
  int preprocess_threads = 2;
  int batch_threads = 2;          // batcher workers (encoder calls in parallel)
  // Before a model version serves, run batch_threads full batches of each modality through
  // the batcher (synthetic inputs), so memory is allocated before traffic arrives.
  bool warmup_full_batches = true;
  int64_t max_message_bytes = 64 << 20;
  int max_items_per_request = 1024;
  int64_t max_image_bytes = 32 << 20;
  int64_t max_pixels = 40'000'000;
  int64_t max_text_bytes = 64 * 1024;
  BatchQueueOptions batching;     // defaults; a model's config.batching overrides
  std::string tls_cert, tls_key, tls_client_ca;
  std::string auth_token_file;
  int job_workers = 1;
  int64_t job_chunk_size = 512;
  int64_t job_batch_size = 64;
};

// Blocks until a signal arrives and the server has drained. Returns the process exit code:
// 0 after a clean drain, 1 when the server could not start (the reason is logged), 2 for a bad
// option. SIGTERM and SIGINT must be blocked in every thread before this is called (the
// caller does it first thing in main) so that they are received here.
int RunServer(const ServerOptions& options);

}  // namespace eqsim
