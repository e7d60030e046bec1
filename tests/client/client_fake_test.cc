// The client library against in-process fake SimilarityService servers whose answers are a
// known function of the request, so reassembly, pinning, retries and reconnection are
// checked exactly.
#include <atomic>
#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "eqsim/v1/similarity.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace eqsim {
namespace {

using ::testing::HasSubstr;

// Item identity: texts are "t<N>", images are the bytes "img<N>".
int64_t TextId(const std::string& t) {
  int64_t v = -1;
  if (t.size() > 1 && t[0] == 't') absl::SimpleAtoi(t.substr(1), &v);
  return v;
}
int64_t ImageId(const std::string& b) {
  int64_t v = -1;
  if (b.rfind("img", 0) == 0) absl::SimpleAtoi(b.substr(3), &v);
  return v;
}

class FakeService final : public v1::SimilarityService::Service {
 public:
  std::atomic<int> fail_unavailable{0};  // fail this many next calls with UNAVAILABLE
  std::atomic<bool> always_unavailable{false};
  std::atomic<int> calls{0};
  std::atomic<int> newest_version{1};
  std::atomic<int> watch_calls{0};
  absl::Mutex mu;
  std::vector<int64_t> versions_requested;
  std::vector<std::string> tokens;
  std::string scores_file;

  grpc::Status Gate(grpc::ServerContext* ctx) {
    ++calls;
    {
      absl::MutexLock l(&mu);
      auto it = ctx->client_metadata().find("authorization");
      tokens.push_back(it == ctx->client_metadata().end()
                           ? ""
                           : std::string(it->second.data(), it->second.size()));
    }
    if (always_unavailable) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining");
    if (fail_unavailable.fetch_sub(1) > 0)
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "model is loading");
    return grpc::Status::OK;
  }
  int64_t Serve(const v1::ModelSpec& spec, v1::ModelRef* ref) {
    const int64_t v = spec.version() == 0 ? newest_version.load() : spec.version();
    {
      absl::MutexLock l(&mu);
      versions_requested.push_back(spec.version());
    }
    ref->set_name("fake");
    ref->set_version(v);
    newest_version = 2;  // a new version rolls out right after the first request
    return v;
  }

  grpc::Status Embed(grpc::ServerContext* ctx, const v1::EmbedRequest* req,
                     v1::EmbedResponse* resp) override {
    if (auto g = Gate(ctx); !g.ok()) return g;
    const int64_t version = Serve(req->model(), resp->mutable_model());
    resp->set_dim(3);
    for (int i = 0; i < req->items_size(); ++i) {
      const v1::Item& it = req->items(i);
      const bool image = it.has_image();
      const int64_t id = image ? ImageId(it.image()) : TextId(it.text());
      if (id < 0) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("item ", i, ": cannot decode"));
      }
      v1::Embedding* e = resp->add_embeddings();
      e->add_values(static_cast<float>(id));
      e->add_values(image ? 1.f : 0.f);
      e->add_values(static_cast<float>(version));
    }
    return grpc::Status::OK;
  }

  grpc::Status Score(grpc::ServerContext* ctx, const v1::ScoreRequest* req,
                     v1::ScoreResponse* resp) override {
    if (auto g = Gate(ctx); !g.ok()) return g;
    Serve(req->model(), resp->mutable_model());
    const bool pairwise = req->mode() == v1::ScoreRequest::PAIRWISE;
    const int rows = req->images_size();
    const int cols = pairwise ? 1 : req->texts_size();
    resp->set_rows(rows);
    resp->set_cols(cols);
    resp->set_logit_scale(2.f);
    for (int i = 0; i < rows; ++i) {
      std::vector<float> logits;
      for (int j = 0; j < cols; ++j) {
        const int64_t img = ImageId(req->images(i));
        const int64_t txt = TextId(req->texts(pairwise ? i : j));
        const float cos = static_cast<float>(img * 0.01 + txt * 0.001);
        resp->add_cosine(cos);
        resp->add_logits(2 * cos);
        logits.push_back(2 * cos);
      }
      if (req->softmax()) {
        double sum = 0;
        for (float l : logits) sum += std::exp(l);
        for (float l : logits) resp->add_probs(static_cast<float>(std::exp(l) / sum));
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* resp) override {
    if (auto g = Gate(ctx); !g.ok()) return g;
    auto* m = resp->add_models();
    m->set_name("fake");
    m->set_version(1);
    m->set_state(v1::ModelStatus::READY);
    resp->set_default_model("fake");
    return grpc::Status::OK;
  }

  static v1::EvaluationEvent Event(const std::string& id, v1::JobState state, int64_t done) {
    v1::EvaluationEvent ev;
    ev.mutable_evaluation()->set_id(id);
    ev.mutable_evaluation()->set_state(state);
    ev.mutable_evaluation()->mutable_progress()->set_done(done);
    ev.mutable_evaluation()->mutable_progress()->set_total(10);
    return ev;
  }

  grpc::Status EvaluateBenchmark(grpc::ServerContext* ctx, const v1::EvaluateBenchmarkRequest*,
                                 grpc::ServerWriter<v1::EvaluationEvent>* w) override {
    if (auto g = Gate(ctx); !g.ok()) return g;
    w->Write(Event("job-1", v1::QUEUED, 0));
    // The client hangs up after the first event; wait for that like a real server would.
    while (!ctx->IsCancelled()) absl::SleepFor(absl::Milliseconds(5));
    return grpc::Status::OK;
  }

  // First watch: two progress events then the stream breaks; second watch: finishes.
  grpc::Status WatchEvaluation(grpc::ServerContext* ctx, const v1::WatchEvaluationRequest* req,
                               grpc::ServerWriter<v1::EvaluationEvent>* w) override {
    if (auto g = Gate(ctx); !g.ok()) return g;
    if (req->id() != "job-1") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + req->id());
    const int n = ++watch_calls;
    if (n == 1) {
      w->Write(Event("job-1", v1::RUNNING, 3));
      w->Write(Event("job-1", v1::RUNNING, 5));
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset");
    }
    if (n == 2) {
      w->Write(Event("job-1", v1::RUNNING, 6));
      return grpc::Status::OK;  // ended without a final state (draining)
    }
    w->Write(Event("job-1", v1::RUNNING, 8));
    w->Write(Event("job-1", v1::SUCCEEDED, 10));
    return grpc::Status::OK;
  }

  grpc::Status GetEvaluation(grpc::ServerContext* ctx, const v1::GetEvaluationRequest* req,
                             v1::Evaluation* resp) override {
    if (auto g = Gate(ctx); !g.ok()) return g;
    if (req->id() != "job-1") return grpc::Status(grpc::StatusCode::NOT_FOUND, "no job " + req->id());
    *resp = Event("job-1", v1::RUNNING, 4).evaluation();
    return grpc::Status::OK;
  }

  grpc::Status GetEvaluationScores(grpc::ServerContext* ctx,
                                   const v1::GetEvaluationScoresRequest* req,
                                   grpc::ServerWriter<v1::ScoresChunk>* w) override {
    if (auto g = Gate(ctx); !g.ok()) return g;
    for (size_t off = 0; off < scores_file.size(); off += 1000) {
      v1::ScoresChunk c;
      c.set_data(scores_file.substr(off, 1000));
      c.set_total_bytes(static_cast<int64_t>(scores_file.size()));
      w->Write(c);
    }
    return grpc::Status::OK;
  }
};

struct FakeServer {
  FakeService service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  FakeServer() {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(&service);
    server = b.BuildAndStart();
  }
  ~FakeServer() { server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1))); }
  std::string target() const { return absl::StrCat("127.0.0.1:", port); }
};

class CountingSleeper : public Sleeper {
 public:
  void Sleep(absl::Duration d) override { ++sleeps; }
  std::atomic<int> sleeps{0};
};

ClientOptions Options(std::vector<std::string> targets, Sleeper* sleeper) {
  ClientOptions o;
  o.targets = std::move(targets);
  o.timeout = absl::Seconds(10);
  o.sleeper = sleeper;
  o.retry.max_attempts = 4;
  return o;
}

TEST(ClientFake, EmbedChunksAcrossEndpointsReassemblesInOrderAndPinsVersion) {
  FakeServer a, b;
  CountingSleeper sleeper;
  ClientOptions o = Options({a.target(), b.target()}, &sleeper);
  o.max_items_per_request = 7;
  o.max_concurrency = 4;
  o.bearer_token = "s3cret";
  auto client = Client::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<Input> items;
  for (int i = 0; i < 100; ++i) {
    items.push_back(i % 3 == 0 ? Input::Image(absl::StrCat("img", i))
                               : Input::Text(absl::StrCat("t", i)));
  }
  auto emb = (*client)->Embed(items);
  ASSERT_TRUE(emb.ok()) << emb.status();
  ASSERT_EQ(emb->rows, 100);
  ASSERT_EQ(emb->dim, 3);
  EXPECT_EQ(emb->model_name, "fake");
  EXPECT_EQ(emb->model_version, 1);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(emb->row(i)[0], i) << i;
    EXPECT_EQ(emb->row(i)[1], i % 3 == 0 ? 1.f : 0.f) << i;
    EXPECT_EQ(emb->row(i)[2], 1.f) << "item " << i << " served by another version";
  }
  // ceil(100 / 7) = 15 requests, shared by both servers; all but the first pinned to v1.
  EXPECT_EQ(a.service.calls + b.service.calls, 15);
  EXPECT_GT(a.service.calls, 0);
  EXPECT_GT(b.service.calls, 0);
  int unpinned = 0;
  for (FakeServer* s : {&a, &b}) {
    absl::MutexLock l(&s->service.mu);
    for (int64_t v : s->service.versions_requested) unpinned += v == 0;
    for (const std::string& t : s->service.tokens) EXPECT_EQ(t, "Bearer s3cret");
  }
  EXPECT_EQ(unpinned, 1);
}

TEST(ClientFake, BadItemErrorNamesTheCallersIndex) {
  FakeServer a;
  CountingSleeper sleeper;
  ClientOptions o = Options({a.target()}, &sleeper);
  o.max_items_per_request = 4;
  auto client = Client::Create(o);
  ASSERT_TRUE(client.ok());
  std::vector<Input> items;
  for (int i = 0; i < 12; ++i) items.push_back(Input::Text(absl::StrCat("t", i)));
  items[9] = Input::Text("garbage");
  auto emb = (*client)->Embed(items);
  ASSERT_EQ(emb.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(emb.status().message(), HasSubstr("item 9: cannot decode"));
  EXPECT_THAT(emb.status().message(), HasSubstr("Embed @ " + a.target()));
  EXPECT_EQ(sleeper.sleeps, 0);  // INVALID_ARGUMENT is never retried
}

TEST(ClientFake, RetriesTransientErrorsThenSucceeds) {
  FakeServer a;
  CountingSleeper sleeper;
  auto client = Client::Create(Options({a.target()}, &sleeper));
  ASSERT_TRUE(client.ok());
  a.service.fail_unavailable = 2;
  auto models = (*client)->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ(models->default_model(), "fake");
  EXPECT_EQ(a.service.calls, 3);
  EXPECT_EQ(sleeper.sleeps, 2);

  a.service.fail_unavailable = 10;
  auto again = (*client)->ListModels();
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(again.status().message(), HasSubstr("model is loading"));
  EXPECT_THAT(again.status().message(), HasSubstr("gave up after 4 attempts"));
}

TEST(ClientFake, SubmitIsNotRetried) {
  FakeServer a;
  CountingSleeper sleeper;
  auto client = Client::Create(Options({a.target()}, &sleeper));
  ASSERT_TRUE(client.ok());
  a.service.fail_unavailable = 1;
  auto job = (*client)->SubmitEvaluation(v1::EvaluationSpec());
  EXPECT_EQ(job.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(a.service.calls, 1);
  job = (*client)->SubmitEvaluation(v1::EvaluationSpec());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->id(), "job-1");
  EXPECT_EQ(job->state(), v1::QUEUED);
}

TEST(ClientFake, RetryMovesToTheNextEndpoint) {
  FakeServer down, up;
  down.service.always_unavailable = true;
  CountingSleeper sleeper;
  auto client = Client::Create(Options({down.target(), up.target()}, &sleeper));
  ASSERT_TRUE(client.ok());
  for (int i = 0; i < 6; ++i) {
    auto emb = (*client)->Embed({Input::Text("t5")});
    ASSERT_TRUE(emb.ok()) << emb.status();
    EXPECT_EQ(emb->row(0)[0], 5.f);
  }
  EXPECT_EQ(up.service.calls, 6);
  EXPECT_EQ(down.service.calls, 3);  // every other call starts there, then moves on
}

TEST(ClientFake, WatchReconnectsAfterDroppedStreams) {
  FakeServer a;
  CountingSleeper sleeper;
  auto client = Client::Create(Options({a.target()}, &sleeper));
  ASSERT_TRUE(client.ok());
  std::vector<int64_t> done;
  std::vector<std::string> causes;
  auto final_state = (*client)->WatchEvaluation(
      "job-1", [&](const v1::Evaluation& e) { done.push_back(e.progress().done()); },
      [&](const absl::Status& cause, int) { causes.push_back(std::string(cause.message())); });
  ASSERT_TRUE(final_state.ok()) << final_state.status();
  EXPECT_EQ(final_state->state(), v1::SUCCEEDED);
  EXPECT_EQ(done, (std::vector<int64_t>{3, 5, 6, 8, 10}));
  ASSERT_EQ(causes.size(), 2u);
  EXPECT_THAT(causes[0], HasSubstr("connection reset"));
  EXPECT_THAT(causes[1], HasSubstr("stream ended before job job-1 finished"));
  EXPECT_EQ(a.service.watch_calls, 3);

  auto missing = (*client)->WatchEvaluation("job-404");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("no job job-404"));
}

TEST(ClientFake, JobCallsFindTheOwningEndpoint) {
  FakeServer a, b;
  CountingSleeper sleeper;
  auto client = Client::Create(Options({a.target(), b.target()}, &sleeper));
  ASSERT_TRUE(client.ok());
  // Both fakes know job-1; a job unknown everywhere is NOT_FOUND after trying both.
  auto ev = (*client)->GetEvaluation("job-1");
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(a.service.calls, 1);
  auto missing = (*client)->GetEvaluation("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(a.service.calls, 2);
  EXPECT_EQ(b.service.calls, 1);
}

TEST(ClientFake, DownloadsScoresAtomically) {
  FakeServer a;
  for (int i = 0; i < 5555; ++i) a.service.scores_file.push_back(static_cast<char>(i * 7));
  CountingSleeper sleeper;
  auto client = Client::Create(Options({a.target()}, &sleeper));
  ASSERT_TRUE(client.ok());
  const std::string path = ::testing::TempDir() + "/scores.npy";
  auto n = (*client)->DownloadScores("job-1", path);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 5555);
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), a.service.scores_file);
  EXPECT_FALSE(std::ifstream(path + ".part").good());
}

TEST(ClientFake, ScoreTilesMatrixAndPairs) {
  FakeServer a;
  CountingSleeper sleeper;
  ClientOptions o = Options({a.target()}, &sleeper);
  o.max_items_per_request = 4;
  auto client = Client::Create(o);
  ASSERT_TRUE(client.ok());
  std::vector<std::string> images, texts;
  for (int i = 0; i < 10; ++i) images.push_back(absl::StrCat("img", i));
  for (int j = 0; j < 9; ++j) texts.push_back(absl::StrCat("t", j));
  ScoreOptions so;
  so.softmax = true;
  auto s = (*client)->Score(images, texts, so);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->rows, 10);
  ASSERT_EQ(s->cols, 9);
  EXPECT_EQ(a.service.calls, 3 * 3);  // 3 image chunks x 3 text chunks
  for (int i = 0; i < 10; ++i) {
    double sum = 0, expect_sum = 0;
    for (int j = 0; j < 9; ++j) expect_sum += std::exp(2 * (i * 0.01 + j * 0.001));
    for (int j = 0; j < 9; ++j) {
      const float cos = static_cast<float>(i * 0.01 + j * 0.001);
      EXPECT_FLOAT_EQ(s->cosine[i * 9 + j], cos);
      EXPECT_FLOAT_EQ(s->logits[i * 9 + j], 2 * cos);
      // Texts were split, so softmax is over the whole row, computed by the client.
      EXPECT_NEAR(s->probs[i * 9 + j], std::exp(2 * cos) / expect_sum, 1e-6);
      sum += s->probs[i * 9 + j];
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
  so = ScoreOptions();
  so.pairwise = true;
  auto p = (*client)->Score(images, std::vector<std::string>(texts.begin(), texts.begin() + 9),
                            so);
  EXPECT_THAT(p.status().message(), HasSubstr("as many images (10) as texts (9)"));
  texts.push_back("t9");
  p = (*client)->Score(images, texts, so);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->rows, 10);
  ASSERT_EQ(p->cols, 1);
  for (int i = 0; i < 10; ++i) EXPECT_FLOAT_EQ(p->cosine[i], static_cast<float>(i * 0.011));
}

}  // namespace
}  // namespace eqsim
