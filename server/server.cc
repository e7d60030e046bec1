#include "server/server.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "server/inference.h"
#include "server/job_manager.h"
#include "server/metrics.h"
#include "server/model_manager.h"
#include "server/service.h"
#include "server/thread_pool.h"

namespace eqsim {
namespace {

void Log(const std::string& msg) { std::fprintf(stderr, "[eqsim-server] %s\n", msg.c_str()); }

bool ReadText(const std::string& path, const char* flag, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    Log(absl::StrCat("--", flag, " ", path, ": cannot open"));
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

}  // namespace

int RunServer(const ServerOptions& o) {
  // ---- options that can be checked before anything starts
  if (o.model_repository.empty()) {
    Log("--model-repository is required");
    return 2;
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    Log("--tls-cert and --tls-key go together");
    return 2;
  }
  if (!o.tls_client_ca.empty() && o.tls_cert.empty()) {
    Log("--tls-client-ca needs --tls-cert and --tls-key");
    return 2;
  }
  std::string token;
  if (!o.auth_token_file.empty()) {
    if (!ReadText(o.auth_token_file, "auth-token-file", &token)) return 2;
    token = std::string(absl::StripAsciiWhitespace(token));
    if (token.empty()) {
      Log("--auth-token-file " + o.auth_token_file + " is empty");
      return 2;
    }
  }
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!o.tls_cert.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    if (!ReadText(o.tls_key, "tls-key", &pair.private_key)) return 2;
    if (!ReadText(o.tls_cert, "tls-cert", &pair.cert_chain)) return 2;
    ssl.pem_key_cert_pairs.push_back(pair);
    if (!o.tls_client_ca.empty()) {
      if (!ReadText(o.tls_client_ca, "tls-client-ca", &ssl.pem_root_certs)) return 2;
      ssl.client_certificate_request =
          GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    creds = grpc::SslServerCredentials(ssl);
  }

  // ---- metrics
  Metrics metrics;
  std::string err;
  if (!metrics.Serve(o.host, o.metrics_port, &err)) {
    Log(err);
    return 1;
  }
  if (o.metrics_port > 0) Log(absl::StrCat("metrics on http://", o.host, ":", o.metrics_port, "/metrics"));

  // ---- inference plumbing
  HealthState health;
  BatcherOptions bo;
  bo.num_threads = std::max(1, o.batch_threads);
  bo.max_low_priority_workers = std::max(1, bo.num_threads - 1);
  bo.on_depth = [&metrics](const std::string& q, int d) { metrics.QueueDepth(q, d); };
  Batcher batcher(bo);
  ThreadPool pool(std::max(1, o.preprocess_threads));
  InferenceLimits limits;
  limits.max_items_per_request = o.max_items_per_request;
  limits.max_text_bytes = o.max_text_bytes;
  Inference inference(&batcher, &pool, &metrics, limits,
                      [&health](bool ok) { health.InferenceResult(ok); });
  ModelManagerOptions mo;
  mo.repository = o.model_repository;
  mo.default_model = o.default_model;
  mo.load.threads = o.threads;
  mo.load.image_limits.max_encoded_bytes = o.max_image_bytes;
  mo.load.image_limits.max_pixels = o.max_pixels;
  mo.default_batching = o.batching;
  mo.warmup_parallel_batches = o.warmup_full_batches ? std::max(1, o.batch_threads) : 0;
  ModelManager models(mo, &inference, &metrics);
  JobManagerOptions jo;
  jo.state_dir = o.state_dir;
  jo.data_root = o.data_root;
  jo.workers = std::max(1, o.job_workers);
  jo.chunk_size = o.job_chunk_size;
  jo.batch_size = o.job_batch_size;
  jo.max_image_bytes = o.max_image_bytes;
  JobManager jobs(jo, &models, &inference, &metrics);

  ServiceOptions so;
  so.auth_token = token;
  SimilarityServiceImpl service(so, &models, &inference, &jobs, &batcher, &metrics, &health);

  // ---- gRPC server: listens first (health NOT_SERVING), then loads the models.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(absl::StrCat(o.host, ":", o.port), creds, &bound_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(o.max_message_bytes, INT32_MAX)));
  builder.SetMaxSendMessageSize(static_cast<int>(std::min<int64_t>(o.max_message_bytes, INT32_MAX)));
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    Log(absl::StrCat("cannot listen on ", o.host, ":", o.port));
    return 1;
  }
  grpc::HealthCheckServiceInterface* hc = server->GetHealthCheckService();
  health.Bind([hc](bool serving) {
    if (!hc) return;
    hc->SetServingStatus(serving);
    hc->SetServingStatus("eqsim.v1.SimilarityService", serving);
  });
  Log(absl::StrCat("listening on ", o.host, ":", bound_port,
                   o.tls_cert.empty() ? " (plaintext)" : " (TLS)",
                   o.tls_client_ca.empty() ? "" : " (client certificates required)",
                   token.empty() ? "" : " (bearer token required)"));
  if (!o.port_file.empty()) {
    std::ofstream pf(o.port_file + ".tmp");
    pf << bound_port << "\n";
    pf.close();
    std::rename((o.port_file + ".tmp").c_str(), o.port_file.c_str());
  }

  absl::Status polled = models.PollOnce();
  if (!polled.ok()) {
    Log(std::string(polled.message()));
    server->Shutdown();
    return 1;
  }
  health.SetModelsReady(models.ServingCount() > 0);
  if (models.ServingCount() == 0) {
    Log("no model version could be loaded; NOT_SERVING until one loads");
  }
  absl::Status started = jobs.Start();
  if (!started.ok()) {
    Log(std::string(started.message()));
    server->Shutdown();
    return 1;
  }

  // ---- repository polling
  absl::Notification stop_polling;
  std::thread poller;
  if (o.poll_interval_s > 0) {
    poller = std::thread([&] {
      while (!stop_polling.WaitForNotificationWithTimeout(absl::Seconds(o.poll_interval_s))) {
        absl::Status s = models.PollOnce();
        if (!s.ok()) Log(std::string(s.message()));
        health.SetModelsReady(models.ServingCount() > 0);
      }
    });
  }

  // ---- health self-test: after a failed encoder batch, recover once the models work again
  // (a NOT_SERVING pod gets no traffic, so waiting for a successful request could be forever).
  std::thread self_tester;
  if (o.health_self_test_interval_s > 0) {
    // The first self-test runs one full interval after the latest failure, so NOT_SERVING
    // lasts at least that long (no flapping under a burst of bad batches).
    const absl::Duration interval = absl::Seconds(o.health_self_test_interval_s);
    self_tester = std::thread([&, interval] {
      while (!stop_polling.WaitForNotificationWithTimeout(
          std::min(interval / 4, absl::Milliseconds(250)))) {
        if (health.inference_ok() || health.draining()) continue;
        if (absl::Now() - health.last_inference_failure() < interval) continue;
        absl::Status st = absl::OkStatus();
        int tested = 0;
        for (const auto& v : models.Serving()) {
          st = SelfTestModel(*v->model);
          if (!st.ok()) break;
          ++tested;
        }
        if (st.ok() && tested > 0 && absl::Now() - health.last_inference_failure() >= interval) {
          Log(absl::StrCat("health self-test passed (", tested, " model version(s))"));
          health.InferenceResult(true);
        } else if (!st.ok()) {
          Log(absl::StrCat("health self-test failed: ", st.message()));
          // Retried one interval later: treat the failed self-test like a failed batch.
          health.InferenceResult(false);
        }
      }
    });
  }

  // ---- wait for SIGTERM / SIGINT (blocked in all threads by main)
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  const absl::Time drain_deadline = absl::Now() + absl::Seconds(o.drain_timeout_s);
  Log(absl::StrCat("received ", sig == SIGTERM ? "SIGTERM" : "SIGINT", "; draining (",
                   service.in_flight(), " call(s) in flight, timeout ", o.drain_timeout_s, " s)"));
  health.SetDraining();
  batcher.StartFlushing();  // queued requests run now instead of waiting for their batch
  stop_polling.Notify();
  if (poller.joinable()) poller.join();
  if (self_tester.joinable()) self_tester.join();
  // Jobs first: running ones checkpoint and stop, their watchers end with UNAVAILABLE.
  jobs.Shutdown();
  // Stops accepting; waits for in-flight calls (the batcher still runs them) until the
  // deadline, then cancels what is left.
  server->Shutdown(absl::ToChronoTime(drain_deadline));
  const bool clean = batcher.Shutdown(std::max(absl::ZeroDuration(), drain_deadline - absl::Now()));
  models.UnloadAll();
  Log(clean ? "drained; bye" : "drain timeout: some queued work was dropped; bye");
  return 0;
}

}  // namespace eqsim
