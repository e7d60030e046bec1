// The real eqsim-server on loopback: every unary RPC, its errors, metrics (promtool) and a
// foreign Python client. One server (two tiny native models) is shared by the suite.
#include <cmath>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_test_util.h"

namespace eqsim::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class ServerApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const std::string repo = *dir_ / "repo";
    WriteTinyModelConfig(repo, "tiny");
    WriteTinyModelVersion(repo, "tiny", 1, 11);
    WriteTinyModelConfig(repo, "other", "batching { max_batch_size: 4 max_queue_delay_us: 500 }");
    WriteTinyModelVersion(repo, "other", 3, 22);
    server_ = new ServerProcess({"--model-repository=" + repo, "--default-model=tiny",
                                 "--max-items-per-request=64", "--max-message-bytes=1048576",
                                 "--preprocess-threads=2", "--threads=1"});
    ASSERT_EQ(server_->WaitHealth("SERVING"), "SERVING") << server_->log();
  }
  static void TearDownTestSuite() {
    if (server_->running()) {
      EXPECT_EQ(server_->Stop(SIGTERM), 0) << server_->log();
    }
    delete server_;
    delete dir_;
  }
  static std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 60) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return ctx;
  }
  static v1::EmbedResponse Embed(const std::vector<v1::Item>& items, bool unnormalized = false,
                                 const std::string& model = "") {
    v1::EmbedRequest req;
    req.mutable_model()->set_name(model);
    for (const auto& it : items) *req.add_items() = it;
    req.set_unnormalized(unnormalized);
    v1::EmbedResponse resp;
    auto ctx = Ctx();
    grpc::Status s = server_->Stub()->Embed(ctx.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }
  static v1::Item Img(const std::string& png) {
    v1::Item i;
    i.set_image(png);
    return i;
  }
  static v1::Item Txt(const std::string& t) {
    v1::Item i;
    i.set_text(t);
    return i;
  }
  static TempDir* dir_;
  static ServerProcess* server_;
};
TempDir* ServerApiTest::dir_ = nullptr;
ServerProcess* ServerApiTest::server_ = nullptr;

TEST_F(ServerApiTest, ListModelsShowsBothReadyWithTheirShape) {
  v1::ListModelsResponse resp;
  auto ctx = Ctx();
  ASSERT_TRUE(server_->Stub()->ListModels(ctx.get(), {}, &resp).ok());
  EXPECT_EQ(resp.default_model(), "tiny");
  ASSERT_EQ(resp.models_size(), 2);
  std::map<std::string, v1::ModelStatus> by_name;
  for (const auto& m : resp.models()) by_name[m.name()] = m;
  EXPECT_EQ(by_name["tiny"].version(), 1);
  EXPECT_EQ(by_name["other"].version(), 3);
  for (auto& [name, m] : by_name) {
    EXPECT_EQ(m.state(), v1::ModelStatus::READY) << name;
    EXPECT_EQ(m.dim(), 16);
    EXPECT_EQ(m.backend(), "native");
    EXPECT_EQ(m.image_size(), 32);
    EXPECT_THAT(m.device(), StartsWith("cpu"));
    EXPECT_THAT(m.tokenizer(), HasSubstr("word"));
  }
}

TEST_F(ServerApiTest, EmbedMixedItemsNormalisedAndInOrder) {
  const std::string a = TestPng(40, 30, 1), b = TestPng(17, 64, 2);
  auto r = Embed({Img(a), Txt("a red bag"), Img(b), Txt("two blue boots")});
  EXPECT_EQ(r.model().name(), "tiny");
  EXPECT_EQ(r.model().version(), 1);
  EXPECT_EQ(r.dim(), 16);
  ASSERT_EQ(r.embeddings_size(), 4);
  for (const auto& e : r.embeddings()) {
    ASSERT_EQ(e.values_size(), 16);
    double n = 0;
    for (float v : e.values()) n += v * v;
    EXPECT_NEAR(n, 1.0, 1e-5);
  }
  // The same items in another order give the same vectors.
  auto swapped = Embed({Txt("two blue boots"), Img(b)});
  for (int d = 0; d < 16; ++d) {
    EXPECT_NEAR(swapped.embeddings(0).values(d), r.embeddings(3).values(d), 1e-5);
    EXPECT_NEAR(swapped.embeddings(1).values(d), r.embeddings(2).values(d), 1e-5);
  }
  // Different inputs differ; unnormalised keeps the direction.
  double diff = 0;
  for (int d = 0; d < 16; ++d) diff += std::abs(r.embeddings(0).values(d) - r.embeddings(2).values(d));
  EXPECT_GT(diff, 1e-3);
  auto raw = Embed({Img(a)}, /*unnormalized=*/true);
  double n = 0;
  for (float v : raw.embeddings(0).values()) n += v * v;
  n = std::sqrt(n);
  EXPECT_GT(std::abs(n - 1.0), 1e-4);
  for (int d = 0; d < 16; ++d) {
    EXPECT_NEAR(raw.embeddings(0).values(d) / n, r.embeddings(0).values(d), 1e-5);
  }
  // The second model is reachable by name and gives other numbers.
  auto other = Embed({Img(a)}, false, "other");
  EXPECT_EQ(other.model().name(), "other");
  EXPECT_EQ(other.model().version(), 3);
}

TEST_F(ServerApiTest, ScoreMatrixAndPairwiseAgreeWithEmbed) {
  std::vector<std::string> images = {TestPng(32, 32, 3), TestPng(50, 20, 4), TestPng(8, 8, 5)};
  std::vector<std::string> texts = {"a red bag", "a green dress", "two sneakers", "blue shirt"};
  std::vector<v1::Item> items;
  for (auto& i : images) items.push_back(Img(i));
  for (auto& t : texts) items.push_back(Txt(t));
  auto emb = Embed(items);
  v1::ScoreRequest req;
  for (auto& i : images) req.add_images(i);
  for (auto& t : texts) req.add_texts(t);
  req.set_softmax(true);
  v1::ScoreResponse resp;
  auto ctx = Ctx();
  ASSERT_TRUE(server_->Stub()->Score(ctx.get(), req, &resp).ok());
  ASSERT_EQ(resp.rows(), 3);
  ASSERT_EQ(resp.cols(), 4);
  ASSERT_EQ(resp.cosine_size(), 12);
  ASSERT_EQ(resp.probs_size(), 12);
  EXPECT_GT(resp.logit_scale(), 1.f);
  for (int i = 0; i < 3; ++i) {
    double psum = 0;
    for (int j = 0; j < 4; ++j) {
      double dot = 0;
      for (int d = 0; d < 16; ++d) {
        dot += emb.embeddings(i).values(d) * emb.embeddings(3 + j).values(d);
      }
      EXPECT_NEAR(resp.cosine(i * 4 + j), dot, 1e-5);
      EXPECT_NEAR(resp.logits(i * 4 + j), resp.logit_scale() * resp.cosine(i * 4 + j), 1e-4);
      psum += resp.probs(i * 4 + j);
    }
    EXPECT_NEAR(psum, 1.0, 1e-5);
  }
  v1::ScoreRequest pw;
  pw.set_mode(v1::ScoreRequest::PAIRWISE);
  for (int k = 0; k < 3; ++k) {
    pw.add_images(images[k]);
    pw.add_texts(texts[k]);
  }
  v1::ScoreResponse pr;
  auto ctx2 = Ctx();
  ASSERT_TRUE(server_->Stub()->Score(ctx2.get(), pw, &pr).ok());
  ASSERT_EQ(pr.rows(), 3);
  ASSERT_EQ(pr.cols(), 1);
  EXPECT_EQ(pr.probs_size(), 0);
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(pr.cosine(k), resp.cosine(k * 4 + k), 1e-5);
}

grpc::Status CallEmbed(v1::SimilarityService::Stub* stub, const v1::EmbedRequest& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::EmbedResponse resp;
  return stub->Embed(&ctx, req, &resp);
}

TEST_F(ServerApiTest, BadImageFailsOnlyItsRequestNamingOnlyItsIndex) {
  auto stub = server_->Stub();
  std::string truncated = TestPng(30, 30, 9);
  truncated.resize(truncated.size() / 3);
  v1::EmbedRequest bad;
  *bad.add_items() = Img(TestPng(20, 20, 1));
  *bad.add_items() = Txt("a red bag");
  *bad.add_items() = Img(truncated);
  *bad.add_items() = Img(TestPng(20, 20, 2));
  v1::EmbedRequest good;
  for (int i = 0; i < 5; ++i) *good.add_items() = Img(TestPng(20 + i, 20, 10 + i));
  // Fire good requests concurrently with the bad one: they share batches.
  std::vector<std::future<grpc::Status>> goods;
  for (int i = 0; i < 4; ++i) {
    goods.push_back(std::async(std::launch::async, [&] { return CallEmbed(stub.get(), good); }));
  }
  grpc::Status s = CallEmbed(stub.get(), bad);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("item 2: "));
  EXPECT_THAT(s.error_message(), HasSubstr("PNG"));
  for (const char* other : {"item 0", "item 1", "item 3"}) {
    EXPECT_THAT(s.error_message(), Not(HasSubstr(other)));
  }
  for (auto& g : goods) EXPECT_TRUE(g.get().ok());
}

TEST_F(ServerApiTest, ErrorsHaveTheDocumentedCodesAndSayWhatIsWrong) {
  auto stub = server_->Stub();
  v1::EmbedRequest req;
  *req.add_items() = Txt("a bag");
  req.mutable_model()->set_name("nope");
  grpc::Status s = CallEmbed(stub.get(), req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("'nope'"));
  req.mutable_model()->set_name("tiny");
  req.mutable_model()->set_version(7);
  s = CallEmbed(stub.get(), req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("version 7"));

  v1::EmbedRequest empty_item;
  *empty_item.add_items() = Txt("bag");
  empty_item.add_items();
  s = CallEmbed(stub.get(), empty_item);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "item 1: neither image nor text is set");

  // (Invalid UTF-8 cannot reach the server: protobuf refuses it in a string field.)
  v1::EmbedRequest bad_text;
  *bad_text.add_items() = Txt("fine");
  *bad_text.add_items() = Txt(std::string(70000, 'a'));  // over --max-text-bytes (64 KiB)
  s = CallEmbed(stub.get(), bad_text);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("item 1: text is 70000 bytes, over the limit"));

  v1::EmbedRequest many;
  for (int i = 0; i < 65; ++i) *many.add_items() = Txt("bag");
  s = CallEmbed(stub.get(), many);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("65 items"));

  v1::EmbedRequest huge;  // over --max-message-bytes (1 MiB): refused by gRPC itself
  *huge.add_items() = Img(std::string(2 << 20, 'x'));
  s = CallEmbed(stub.get(), huge);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  v1::ScoreRequest pw;
  pw.set_mode(v1::ScoreRequest::PAIRWISE);
  pw.add_images(TestPng(8, 8, 1));
  pw.add_texts("a");
  pw.add_texts("b");
  v1::ScoreResponse sr;
  auto ctx = Ctx();
  s = stub->Score(ctx.get(), pw, &sr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("1 images and 2 texts"));
  v1::ScoreRequest no_text;
  no_text.add_images(TestPng(8, 8, 1));
  auto ctx2 = Ctx();
  EXPECT_EQ(stub->Score(ctx2.get(), no_text, &sr).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Score numbers its items images first, then texts.
  v1::ScoreRequest bad_score;
  bad_score.add_images(TestPng(8, 8, 1));
  bad_score.add_texts("ok");
  bad_score.add_texts("");
  auto ctx3 = Ctx();
  s = stub->Score(ctx3.get(), bad_score, &sr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), StartsWith("item 2: text is empty"));

  // Evaluations are off without --data-root; unknown jobs are NOT_FOUND.
  v1::GetEvaluationRequest g;
  g.set_id("ev-nope");
  v1::Evaluation e;
  auto ctx4 = Ctx();
  EXPECT_EQ(stub->GetEvaluation(ctx4.get(), g, &e).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::EvaluateBenchmarkRequest eb;
  eb.mutable_spec()->set_format(v1::EQBEN_PAIRS);
  eb.mutable_spec()->set_annotation_path("x.json");
  auto ctx5 = Ctx();
  auto reader = stub->EvaluateBenchmark(ctx5.get(), eb);
  v1::EvaluationEvent ev;
  EXPECT_FALSE(reader->Read(&ev));
  s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("--data-root"));
}

TEST_F(ServerApiTest, MetricsPassPromtoolAndCountWhatHappened) {
  Embed({Txt("a bag"), Img(TestPng(9, 9, 9))});
  const std::string scrape = server_->Scrape();
  ASSERT_FALSE(scrape.empty());
  const std::string file = *dir_ / "metrics.txt";
  WriteFile(file, scrape);
  std::string out;
  EXPECT_EQ(RunCommand("promtool check metrics < " + file, &out), 0) << out;
  EXPECT_GE(MetricValue(scrape, "eqsim_requests_total", {{"method", "Embed"}, {"code", "OK"}}), 1);
  EXPECT_GE(MetricValue(scrape, "eqsim_batch_size_count", {{"model", "tiny"}, {"modality", "image"}}), 1);
  EXPECT_GE(MetricValue(scrape, "eqsim_queue_duration_seconds_count", {{"model", "tiny"}}), 1);
  EXPECT_GE(MetricValue(scrape, "eqsim_compute_duration_seconds_count", {{"model", "tiny"}}), 1);
  EXPECT_EQ(MetricValue(scrape, "eqsim_model_ready", {{"model", "tiny"}, {"version", "1"}}), 1);
  EXPECT_EQ(MetricValue(scrape, "eqsim_model_loads_total", {{"model", "other"}, {"result", "ok"}}), 1);
  EXPECT_EQ(MetricValue(scrape, "eqsim_jobs", {{"state", "RUNNING"}}), 0);
}

TEST_F(ServerApiTest, ForeignPythonClientGetsTheSameNumbers) {
  const std::string stubs = *dir_ / "pystubs";
  std::string out;
  ASSERT_EQ(RunCommand("mkdir -p " + stubs + " && /usr/bin/python3 -m grpc_tools.protoc -I " +
                    EQSIM_SOURCE_DIR "/proto --python_out=" + stubs + " --grpc_python_out=" +
                    stubs + " " EQSIM_SOURCE_DIR "/proto/eqsim/v1/similarity.proto",
                &out),
            0)
      << out;
  std::vector<std::string> images = {TestPng(33, 21, 7), TestPng(64, 64, 8)};
  std::vector<std::string> texts = {"a red bag", "two green sneakers", "blue dress"};
  std::string cmd = "/usr/bin/python3 " EQSIM_SOURCE_DIR "/tests/server/foreign_client.py " +
                    stubs + " " + std::to_string(server_->port());
  for (size_t i = 0; i < images.size(); ++i) {
    const std::string p = *dir_ / ("py" + std::to_string(i) + ".png");
    WriteFile(p, images[i]);
    cmd += " " + p;
  }
  cmd += " --";
  for (auto& t : texts) cmd += " '" + t + "'";
  ASSERT_EQ(RunCommand(cmd, &out), 0) << out;
  auto py = nlohmann::json::parse(out.substr(out.find('{')));
  // The same calls through the C++ stub.
  std::vector<v1::Item> items;
  for (auto& i : images) items.push_back(Img(i));
  for (auto& t : texts) items.push_back(Txt(t));
  auto emb = Embed(items);
  v1::ScoreRequest req;
  for (auto& i : images) req.add_images(i);
  for (auto& t : texts) req.add_texts(t);
  req.set_softmax(true);
  v1::ScoreResponse sc;
  auto ctx = Ctx();
  ASSERT_TRUE(server_->Stub()->Score(ctx.get(), req, &sc).ok());

  EXPECT_EQ(py["model"][0], "tiny");
  EXPECT_EQ(py["dim"], 16);
  EXPECT_TRUE(py["reflection_lists_service"].get<bool>());
  double max_diff = 0;
  ASSERT_EQ(py["embeddings"].size(), 5u);
  for (int r = 0; r < 5; ++r) {
    for (int d = 0; d < 16; ++d) {
      max_diff = std::max(max_diff, std::abs(py["embeddings"][r][d].get<double>() -
                                             emb.embeddings(r).values(d)));
    }
  }
  ASSERT_EQ(py["cosine"].size(), 6u);
  for (int k = 0; k < 6; ++k) {
    max_diff = std::max(max_diff, std::abs(py["cosine"][k].get<double>() - sc.cosine(k)));
    max_diff = std::max(max_diff, std::abs(py["logits"][k].get<double>() - sc.logits(k)) /
                                      sc.logit_scale());
    max_diff = std::max(max_diff, std::abs(py["probs"][k].get<double>() - sc.probs(k)));
  }
  EXPECT_LT(max_diff, 1e-6);
  EXPECT_EQ(py["logit_scale"].get<double>(), sc.logit_scale());
}

}  // namespace
}  // namespace eqsim::testing
