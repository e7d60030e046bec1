// The real eqsim-server: queue rules end to end (overload, deadline in queue, cancellation),
// SIGTERM drain with requests in flight, hot reload and failed loads, health transitions,
// TLS (mutual) and bearer-token authentication.
#include <signal.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_test_util.h"

namespace eqsim::testing {
namespace {

using ::testing::HasSubstr;

v1::EmbedRequest Texts(int n, const std::string& text = "a red bag") {
  v1::EmbedRequest r;
  for (int i = 0; i < n; ++i) r.add_items()->set_text(text);
  return r;
}

// Waits (up to 120 s) until `pred(scrape)` holds; returns the last scrape.
template <typename Pred>
std::string WaitMetrics(const ServerProcess& s, Pred pred) {
  std::string scrape;
  for (int i = 0; i < 1200; ++i) {
    scrape = s.Scrape();
    if (pred(scrape)) return scrape;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ADD_FAILURE() << "metrics condition not reached; last scrape:\n" << scrape;
  return scrape;
}

double Requests(const std::string& scrape, const std::string& code) {
  return MetricValue(scrape, "eqsim_requests_total", {{"method", "Embed"}, {"code", code}});
}
double Batches(const std::string& scrape) {
  double n = MetricValue(scrape, "eqsim_batch_size_count", {{"model", "tiny"}, {"modality", "text"}});
  return n < 0 ? 0 : n;
}
double Depth(const std::string& scrape) {
  return MetricValue(scrape, "eqsim_queue_depth", {{"queue", "tiny/1/text"}});
}

class AsyncEmbed {
 public:
  AsyncEmbed(v1::SimilarityService::Stub* stub, const v1::EmbedRequest& req, int deadline_ms) {
    req_ = req;
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
    stub->async()->Embed(&ctx_, &req_, &resp_, [this](grpc::Status s) {
      status_ = s;
      done_.Notify();
    });
  }
  grpc::Status Wait() {
    done_.WaitForNotification();
    return status_;
  }
  void Cancel() { ctx_.TryCancel(); }
  const v1::EmbedResponse& response() const { return resp_; }

 private:
  grpc::ClientContext ctx_;
  v1::EmbedRequest req_;
  v1::EmbedResponse resp_;
  grpc::Status status_;
  absl::Notification done_;
};

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = dir_ / "repo";
    WriteTinyModelConfig(repo_, "tiny");
    WriteTinyModelVersion(repo_, "tiny", 1, 5);
  }
  TempDir dir_;
  std::string repo_;
};

TEST_F(LifecycleTest, OverloadDeadlineAndCancellationInTheQueue) {
  // Batches of 8, at most 4 items waiting, a partial batch waits 6 s: requests stay queued.
  ServerProcess server({"--model-repository=" + repo_, "--max-batch-size=8",
                        "--max-queue-size=4", "--max-queue-delay-us=6000000",
                        "--batch-threads=1"});
  ASSERT_EQ(server.WaitHealth("SERVING"), "SERVING") << server.log();
  auto stub = server.Stub();

  // Overload: 3 items wait; 2 more do not fit -> RESOURCE_EXHAUSTED at once.
  AsyncEmbed first(stub.get(), Texts(3), 60000);
  WaitMetrics(server, [](const std::string& s) { return Depth(s) == 3; });
  {
    grpc::ClientContext ctx;
    v1::EmbedResponse resp;
    grpc::Status s = stub->Embed(&ctx, Texts(2), &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(s.error_message(), HasSubstr("max_queue_size 4"));
  }
  grpc::Status fs = first.Wait();  // runs after the 6 s delay
  EXPECT_TRUE(fs.ok()) << fs.error_message();
  EXPECT_EQ(first.response().embeddings_size(), 3);
  std::string scrape = WaitMetrics(server, [](const std::string& s) { return Depth(s) == 0; });
  const double batches = Batches(scrape);
  EXPECT_EQ(batches, 1);

  // Deadline: 300 ms is far shorter than the 6 s batch delay. The server drops the request
  // from the queue when its deadline passes, before any compute.
  AsyncEmbed late(stub.get(), Texts(1), 300);
  EXPECT_EQ(late.Wait().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  scrape = WaitMetrics(server, [](const std::string& s) {
    return Requests(s, "DEADLINE_EXCEEDED") == 1;
  });
  EXPECT_EQ(Depth(scrape), 0);
  EXPECT_EQ(Batches(scrape), batches);  // never computed

  // Cancellation: the queued request leaves the queue when the client cancels.
  AsyncEmbed cancelled(stub.get(), Texts(2), 60000);
  WaitMetrics(server, [](const std::string& s) { return Depth(s) == 2; });
  cancelled.Cancel();
  EXPECT_EQ(cancelled.Wait().error_code(), grpc::StatusCode::CANCELLED);
  scrape = WaitMetrics(server, [](const std::string& s) { return Requests(s, "CANCELLED") == 1; });
  EXPECT_EQ(Depth(scrape), 0);
  EXPECT_EQ(Batches(scrape), batches);
  EXPECT_EQ(server.Stop(SIGTERM), 0) << server.log();
}

TEST_F(LifecycleTest, SigtermFinishesInFlightRequestsAndExitsZero) {
  ServerProcess server({"--model-repository=" + repo_, "--max-batch-size=32",
                        "--max-queue-delay-us=30000000", "--drain-timeout-s=60"});
  ASSERT_EQ(server.WaitHealth("SERVING"), "SERVING") << server.log();
  auto stub = server.Stub();
  // Watch health over a stream opened before the signal.
  auto health = grpc::health::v1::Health::NewStub(server.Channel());
  grpc::ClientContext watch_ctx;
  grpc::health::v1::HealthCheckRequest hreq;
  auto watch = health->Watch(&watch_ctx, hreq);
  std::vector<std::string> seen;
  std::thread watcher([&] {
    grpc::health::v1::HealthCheckResponse r;
    while (watch->Read(&r)) {
      seen.push_back(grpc::health::v1::HealthCheckResponse::ServingStatus_Name(r.status()));
    }
  });
  // Three requests wait in the queue (the batch delay is 30 s).
  std::vector<std::unique_ptr<AsyncEmbed>> calls;
  for (int i = 0; i < 3; ++i) calls.push_back(std::make_unique<AsyncEmbed>(stub.get(), Texts(2), 120000));
  WaitMetrics(server, [](const std::string& s) { return Depth(s) == 6; });
  const int code = server.Stop(SIGTERM);
  EXPECT_EQ(code, 0) << server.log();
  for (auto& c : calls) {
    grpc::Status s = c->Wait();
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(c->response().embeddings_size(), 2);
  }
  watch_ctx.TryCancel();
  watcher.join();
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.front(), "SERVING");
  EXPECT_EQ(seen.back(), "NOT_SERVING");
  EXPECT_THAT(server.log(), HasSubstr("received SIGTERM; draining"));
}

TEST_F(LifecycleTest, HotReloadSwitchesVersionsAndAFailedLoadKeepsTheOldOne) {
  ServerProcess server({"--model-repository=" + repo_, "--poll-interval-s=0.2"});
  ASSERT_EQ(server.WaitHealth("SERVING"), "SERVING") << server.log();
  auto stub = server.Stub();
  auto embed = [&](v1::EmbedResponse* resp) {
    grpc::ClientContext ctx;
    return stub->Embed(&ctx, Texts(1), resp);
  };
  auto models = [&] {
    grpc::ClientContext ctx;
    v1::ListModelsResponse r;
    EXPECT_TRUE(stub->ListModels(&ctx, {}, &r).ok());
    return r;
  };
  v1::EmbedResponse v1_resp;
  ASSERT_TRUE(embed(&v1_resp).ok());
  EXPECT_EQ(v1_resp.model().version(), 1);

  WriteTinyModelVersion(repo_, "tiny", 2, 6);
  v1::EmbedResponse v2_resp;
  for (int i = 0; i < 1200; ++i) {
    ASSERT_TRUE(embed(&v2_resp).ok());
    if (v2_resp.model().version() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(v2_resp.model().version(), 2) << server.log();
  double diff = 0;
  for (int d = 0; d < 16; ++d) {
    diff += std::abs(v1_resp.embeddings(0).values(d) - v2_resp.embeddings(0).values(d));
  }
  EXPECT_GT(diff, 1e-3);  // other weights, other vectors
  auto listed = models();
  ASSERT_EQ(listed.models_size(), 1);  // latest: 1 -> version 1 was retired
  EXPECT_EQ(listed.models(0).version(), 2);

  // Version 3 is broken: it is reported, version 2 keeps serving.
  WriteFile(repo_ + "/tiny/.staging3/weights.pt", "this is not a torch archive");
  std::filesystem::rename(repo_ + "/tiny/.staging3", repo_ + "/tiny/3");
  v1::ModelStatus broken;
  for (int i = 0; i < 1200 && broken.state() != v1::ModelStatus::UNAVAILABLE; ++i) {
    const v1::ListModelsResponse now = models();
    for (const auto& m : now.models()) {
      if (m.version() == 3) broken = m;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(broken.version(), 3) << server.log();
  EXPECT_EQ(broken.state(), v1::ModelStatus::UNAVAILABLE);
  EXPECT_FALSE(broken.reason().empty());
  v1::EmbedResponse after;
  ASSERT_TRUE(embed(&after).ok());
  EXPECT_EQ(after.model().version(), 2);
  EXPECT_EQ(server.Health(), "SERVING");
  const std::string scrape = server.Scrape();
  EXPECT_GE(MetricValue(scrape, "eqsim_model_loads_total", {{"model", "tiny"}, {"result", "error"}}), 1);
  EXPECT_EQ(MetricValue(scrape, "eqsim_model_ready", {{"model", "tiny"}, {"version", "2"}}), 1);
  EXPECT_THAT(server.log(), HasSubstr("version 3: load FAILED"));
  EXPECT_EQ(server.Stop(SIGTERM), 0);
}

TEST_F(LifecycleTest, HealthIsNotServingUntilAModelIsLoaded) {
  TempDir empty;
  const std::string repo = empty / "repo";
  WriteTinyModelConfig(repo, "tiny");  // no version yet
  ServerProcess server({"--model-repository=" + repo, "--poll-interval-s=0.2"});
  EXPECT_EQ(server.WaitHealth("NOT_SERVING"), "NOT_SERVING") << server.log();
  {
    auto stub = server.Stub();
    grpc::ClientContext ctx;
    v1::EmbedResponse resp;
    grpc::Status s = stub->Embed(&ctx, Texts(1), &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  WriteTinyModelVersion(repo, "tiny", 1, 5);
  EXPECT_EQ(server.WaitHealth("SERVING"), "SERVING") << server.log();
  EXPECT_EQ(server.Stop(SIGINT), 0);
}

// A TorchScript model (made by /usr/bin/python3) whose text encoder raises on a batch of
// exactly 3 texts: the failed batch turns health NOT_SERVING; the self-test (batch 1) passes,
// and health is SERVING again without any client traffic.
constexpr char kPoisonedModel[] = R"py(
import os, sys, torch

class Poisoned(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.img = torch.nn.Linear(3, 8)
        self.emb = torch.nn.Embedding(16, 8)

    @torch.jit.export
    def encode_image(self, x):
        return self.img(x.mean(dim=(2, 3)))

    @torch.jit.export
    def encode_text(self, ids):
        if ids.shape[0] == 3:
            raise RuntimeError("poisoned: this model refuses batches of 3 texts")
        return self.emb(ids).mean(dim=1)

    def forward(self, x):
        return self.encode_image(x)

torch.manual_seed(0)
os.makedirs(os.path.join(sys.argv[1], "1"), exist_ok=True)
torch.jit.script(Poisoned()).save(os.path.join(sys.argv[1], "1", "model.pt"))
)py";

// Writes <repo>/poisoned (the model above) with `extra` appended to its config.
void WritePoisonedModel(const TempDir& d, const std::string& repo, const std::string& extra) {
  WriteFile(repo + "/poisoned/config.pbtxt",
            "name: \"poisoned\"\nbackend: TORCHSCRIPT\nembed_dim: 8\ndevice: CPU\n"
            "image { recipe: NATIVE size: 16 }\n"
            "tokenizer { kind: WORD vocab_file: \"vocab.txt\" }\n" + extra);
  WriteFile(repo + "/poisoned/vocab.txt", "a\nred\nbag\n");
  WriteFile(d / "make.py", kPoisonedModel);
  std::string out;
  ASSERT_EQ(RunCommand("/usr/bin/python3 " + d / "make.py" + " " + repo + "/poisoned", &out), 0)
      << out;
}

TEST_F(LifecycleTest, FailedInferenceIsNotServingUntilTheSelfTestPasses) {
  TempDir d;
  const std::string repo = d / "repo";
  WritePoisonedModel(d, repo, "");
  ServerProcess server({"--model-repository=" + repo, "--max-queue-delay-us=0",
                        "--health-self-test-interval-s=2"});
  ASSERT_EQ(server.WaitHealth("SERVING"), "SERVING") << server.log();
  auto stub = server.Stub();
  auto embed = [&](int n) {
    grpc::ClientContext ctx;
    v1::EmbedResponse resp;
    return stub->Embed(&ctx, Texts(n, "a red bag"), &resp);
  };
  ASSERT_TRUE(embed(2).ok());
  grpc::Status s = embed(3);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(s.error_message(), HasSubstr("refuses batches of 3 texts"));
  // The failed batch updates health before its calls complete; NOT_SERVING lasts at least
  // one self-test interval (2 s).
  EXPECT_EQ(server.Health(), "NOT_SERVING");
  // No requests now: the self-test alone brings it back.
  EXPECT_EQ(server.WaitHealth("SERVING"), "SERVING") << server.log();
  EXPECT_THAT(server.log(), HasSubstr("health self-test passed (1 model version(s))"));
  EXPECT_THAT(server.log(), HasSubstr("NOT_SERVING (last inference failed)"));
  EXPECT_GE(MetricValue(server.Scrape(), "eqsim_inference_failures_total", {{"model", "poisoned"}}), 1);
  EXPECT_TRUE(embed(2).ok());
  EXPECT_EQ(server.Stop(SIGTERM), 0) << server.log();
}

// The full-batch warm-up runs real batches through the batcher before a version serves: a
// model that fails on its max batch size (3 here) never serves, and says why; without the
// warm-up it loads (and fails on the first full batch instead).
TEST_F(LifecycleTest, FullBatchWarmUpRunsBeforeAVersionServes) {
  TempDir d;
  const std::string repo = d / "repo";
  WritePoisonedModel(d, repo, "batching { max_batch_size: 3 }\n");
  {
    ServerProcess server({"--model-repository=" + repo});
    EXPECT_EQ(server.WaitHealth("NOT_SERVING"), "NOT_SERVING");
    v1::ModelStatus status;
    for (int i = 0; i < 1200 && status.state() != v1::ModelStatus::UNAVAILABLE; ++i) {
      grpc::ClientContext ctx;
      v1::ListModelsResponse r;
      if (server.Stub()->ListModels(&ctx, {}, &r).ok() && r.models_size() > 0) status = r.models(0);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(status.state(), v1::ModelStatus::UNAVAILABLE) << server.log();
    EXPECT_THAT(status.reason(), HasSubstr("warm-up with 2 batch(es) of 3 texts"));
    EXPECT_THAT(status.reason(), HasSubstr("refuses batches of 3 texts"));
    EXPECT_EQ(server.Health(), "NOT_SERVING");
    EXPECT_EQ(server.Stop(SIGTERM), 0) << server.log();
  }
  ServerProcess server({"--model-repository=" + repo, "--warmup-full-batches=false"});
  EXPECT_EQ(server.WaitHealth("SERVING"), "SERVING") << server.log();
  EXPECT_EQ(server.Stop(SIGTERM), 0) << server.log();
}

std::shared_ptr<grpc::Channel> TlsChannel(const ServerProcess& server, const TempDir& certs,
                                          bool client_cert) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ReadFile(certs / "ca.pem");
  if (client_cert) {
    o.pem_private_key = ReadFile(certs / "client.key");
    o.pem_cert_chain = ReadFile(certs / "client.pem");
  }
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  return grpc::CreateCustomChannel(server.address(), grpc::SslCredentials(o), args);
}

TEST_F(LifecycleTest, MutualTlsAndBearerToken) {
  TempDir certs;
  const std::string d = certs.path();
  std::string out;
  const std::string cmd = absl::StrCat(
      "cd ", d, " && set -e && ",
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=eqsim-test-ca && ",
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost && ",
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext && ",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext && ",
      "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=client && ",
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2");
  ASSERT_EQ(RunCommand(cmd, &out), 0) << out;
  WriteFile(certs / "token", "s3cret-token\n");
  ServerProcess server({"--model-repository=" + repo_, "--tls-cert=" + certs / "server.pem",
                        "--tls-key=" + certs / "server.key", "--tls-client-ca=" + certs / "ca.pem",
                        "--auth-token-file=" + certs / "token"});
  auto channel = TlsChannel(server, certs, true);
  std::string h;
  for (int i = 0; i < 1200 && (h = server.Health(channel)) != "SERVING"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(h, "SERVING") << server.log();  // health needs no token
  auto stub = v1::SimilarityService::NewStub(channel);
  auto call = [&](const std::string& auth) {
    grpc::ClientContext ctx;
    if (!auth.empty()) ctx.AddMetadata("authorization", auth);
    v1::EmbedResponse resp;
    return stub->Embed(&ctx, Texts(1), &resp);
  };
  EXPECT_TRUE(call("Bearer s3cret-token").ok());
  grpc::Status s = call("");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("bearer token"));
  EXPECT_EQ(call("Bearer wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(call("s3cret-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  {
    grpc::ClientContext ctx;
    v1::ListModelsResponse r;
    EXPECT_EQ(stub->ListModels(&ctx, {}, &r).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // Without a client certificate, or in plaintext, no call gets through.
  auto no_cert = v1::SimilarityService::NewStub(TlsChannel(server, certs, false));
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.AddMetadata("authorization", "Bearer s3cret-token");
    v1::EmbedResponse resp;
    EXPECT_EQ(no_cert->Embed(&ctx, Texts(1), &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  EXPECT_NE(server.Health(), "SERVING");  // plaintext client
  EXPECT_EQ(server.Stop(SIGTERM), 0);
}

}  // namespace
}  // namespace eqsim::testing
