// Evaluation jobs on the real eqsim-server: path confinement, a finished job with scores, a job
// interrupted by SIGTERM that resumes after a restart from its persisted chunks, cancel,
// listings, and results that survive the restart.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/server/server_test_util.h"

namespace eqsim::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int kSamples = 240;

class JobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = dir_ / "repo";
    WriteTinyModelConfig(repo_, "tiny");
    WriteTinyModelVersion(repo_, "tiny", 1, 5);
    data_ = dir_ / "data";
    state_ = dir_ / "state";
    // An EqBen pairs benchmark: every sample has its own two images; one image is missing.
    nlohmann::json list = nlohmann::json::array();
    const auto& words = TinyVocabulary();
    for (int i = 0; i < kSamples; ++i) {
      const std::string i0 = absl::StrCat("img/", i, "_0.png"), i1 = absl::StrCat("img/", i, "_1.png");
      if (i != 5) WriteFile(data_ + "/bench/" + i0, TestPng(24, 24, 2 * i));
      WriteFile(data_ + "/bench/" + i1, TestPng(24, 24, 2 * i + 1));
      list.push_back({{"image0", i0},
                      {"image1", i1},
                      {"caption0", words[i % 11] + " " + words[(i / 11) % 11]},
                      {"caption1", words[(i / 11) % 11] + " " + words[i % 11]}});
    }
    WriteFile(data_ + "/bench/pairs.json", list.dump());
    WriteFile(dir_ / "outside.json", list.dump());
    fs::create_symlink(dir_ / "outside.json", data_ + "/bench/link.json");
  }
  std::vector<std::string> Flags() {
    return {"--model-repository=" + repo_, "--data-root=" + data_, "--state-dir=" + state_,
            "--job-chunk-size=8", "--job-batch-size=4", "--max-batch-size=8",
            "--max-queue-delay-us=40000"};
  }
  static v1::EvaluationSpec Spec(int limit, bool keep) {
    v1::EvaluationSpec s;
    s.set_format(v1::EQBEN_PAIRS);
    s.set_annotation_path("bench/pairs.json");
    s.set_image_root("bench");
    s.set_limit(limit);
    s.set_keep_scores(keep);
    s.set_label(absl::StrCat("limit ", limit));
    return s;
  }
  TempDir dir_;
  std::string repo_, data_, state_;
};

// Submits and reads events until `stop(event)` or the stream ends; returns the last event.
v1::Evaluation Submit(v1::SimilarityService::Stub* stub, const v1::EvaluationSpec& spec,
                      grpc::Status* status,
                      const std::function<bool(const v1::Evaluation&)>& stop = nullptr) {
  grpc::ClientContext ctx;
  v1::EvaluateBenchmarkRequest req;
  *req.mutable_spec() = spec;
  auto reader = stub->EvaluateBenchmark(&ctx, req);
  v1::EvaluationEvent ev;
  v1::Evaluation last;
  while (reader->Read(&ev)) {
    last = ev.evaluation();
    if (stop && stop(last)) {
      ctx.TryCancel();  // breaking the stream must not stop the job
      break;
    }
  }
  *status = reader->Finish();
  return last;
}

v1::Evaluation WatchToEnd(v1::SimilarityService::Stub* stub, const std::string& id) {
  grpc::ClientContext ctx;
  v1::WatchEvaluationRequest req;
  req.set_id(id);
  auto reader = stub->WatchEvaluation(&ctx, req);
  v1::EvaluationEvent ev;
  v1::Evaluation last;
  while (reader->Read(&ev)) last = ev.evaluation();
  grpc::Status s = reader->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  return last;
}

std::string Scores(v1::SimilarityService::Stub* stub, const std::string& id, grpc::Status* s) {
  grpc::ClientContext ctx;
  v1::GetEvaluationScoresRequest req;
  req.set_id(id);
  auto reader = stub->GetEvaluationScores(&ctx, req);
  v1::ScoresChunk chunk;
  std::string data;
  while (reader->Read(&chunk)) {
    data += chunk.data();
    EXPECT_EQ(chunk.total_bytes() >= static_cast<int64_t>(data.size()), true);
  }
  *s = reader->Finish();
  return data;
}

std::vector<float> NpyFloats(const std::string& npy, std::string* header) {
  // NumPy v1.0: magic (6) + version (2) + header length (2, little endian) + header.
  EXPECT_GE(npy.size(), 10u);
  EXPECT_EQ(npy.substr(0, 6), "\x93NUMPY");
  const size_t hlen = static_cast<uint8_t>(npy[8]) | (static_cast<uint8_t>(npy[9]) << 8);
  *header = npy.substr(10, hlen);
  std::vector<float> v((npy.size() - 10 - hlen) / 4);
  std::memcpy(v.data(), npy.data() + 10 + hlen, v.size() * 4);
  return v;
}

TEST_F(JobsTest, PathsOutsideTheDataRootAreRefused) {
  ServerProcess server(Flags());
  ASSERT_EQ(server.WaitHealth("SERVING"), "SERVING") << server.log();
  auto stub = server.Stub();
  struct Case {
    std::string annotation, image_root, want;
  };
  const std::vector<Case> cases = {
      {"../outside.json", "bench", "spec.annotation_path"},
      {dir_ / "outside.json", "bench", "spec.annotation_path"},
      {"bench/link.json", "bench", "spec.annotation_path"},
      {"bench/../../outside.json", "bench", "spec.annotation_path"},
      {"bench/pairs.json", "..", "spec.image_root"},
      {"bench/pairs.json", "/etc", "spec.image_root"},
      {"bench/missing.json", "bench", "no such file"},
  };
  for (const auto& c : cases) {
    v1::EvaluationSpec spec = Spec(0, false);
    spec.set_annotation_path(c.annotation);
    spec.set_image_root(c.image_root);
    grpc::Status s;
    Submit(stub.get(), spec, &s);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.annotation;
    EXPECT_THAT(s.error_message(), HasSubstr(c.want)) << c.annotation;
  }
  v1::EvaluationSpec no_format = Spec(0, false);
  no_format.set_format(v1::FORMAT_UNSPECIFIED);
  grpc::Status s;
  Submit(stub.get(), no_format, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::EvaluationSpec bad_model = Spec(0, false);
  bad_model.mutable_model()->set_name("nope");
  Submit(stub.get(), bad_model, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext ctx;
  v1::ListEvaluationsResponse list;
  ASSERT_TRUE(stub->ListEvaluations(&ctx, {}, &list).ok());
  EXPECT_EQ(list.evaluations_size(), 0);  // nothing was queued
  EXPECT_EQ(server.Stop(SIGTERM), 0);
}

TEST_F(JobsTest, FinishedAndInterruptedJobsSurviveARestart) {
  std::string finished_id, interrupted_id, scores_before;
  v1::EvaluationResult finished_result;
  {
    ServerProcess server(Flags());
    ASSERT_EQ(server.WaitHealth("SERVING"), "SERVING") << server.log();
    auto stub = server.Stub();
    // A small job runs to the end over the stream.
    grpc::Status s;
    v1::Evaluation done = Submit(stub.get(), Spec(10, true), &s);
    ASSERT_TRUE(s.ok()) << s.error_message() << server.log();
    ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
    finished_id = done.id();
    finished_result = done.result();
    EXPECT_EQ(done.result().overall().samples(), 9);  // sample 5 has a missing image
    EXPECT_EQ(done.result().overall().skipped(), 1);
    ASSERT_EQ(done.result().skipped_size(), 1);
    EXPECT_EQ(done.result().skipped(0).index(), 5);
    EXPECT_THAT(done.result().skipped(0).reason(), HasSubstr("5_0.png"));
    EXPECT_TRUE(done.result().has_scores());
    EXPECT_EQ(done.model().name(), "tiny");
    EXPECT_EQ(done.progress().done(), 10);
    scores_before = Scores(stub.get(), finished_id, &s);
    ASSERT_TRUE(s.ok()) << s.error_message();
    std::string header;
    auto floats = NpyFloats(scores_before, &header);
    EXPECT_THAT(header, HasSubstr("(10, 4)"));
    ASSERT_EQ(floats.size(), 40u);
    EXPECT_TRUE(std::isnan(floats[5 * 4]));
    for (float f : {floats[0], floats[1], floats[2], floats[3]}) {
      EXPECT_GE(f, -1.f);
      EXPECT_LE(f, 1.f);
    }

    // The full job: the stream is dropped after two chunks; the job keeps running; SIGTERM
    // interrupts it.
    v1::Evaluation running = Submit(stub.get(), Spec(0, true), &s, [](const v1::Evaluation& e) {
      return e.state() == v1::RUNNING && e.progress().done() >= 16;
    });
    ASSERT_EQ(running.state(), v1::RUNNING) << server.log();
    interrupted_id = running.id();
    grpc::ClientContext ctx;
    v1::GetEvaluationRequest g;
    g.set_id(interrupted_id);
    v1::Evaluation still;
    ASSERT_TRUE(stub->GetEvaluation(&ctx, g, &still).ok());
    EXPECT_EQ(still.state(), v1::RUNNING);
    EXPECT_LT(still.progress().done(), kSamples) << "the job finished too fast to interrupt";
    EXPECT_EQ(still.progress().total(), kSamples);
    // Scores of an unfinished job are refused.
    Scores(stub.get(), interrupted_id, &s);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(server.Stop(SIGTERM), 0) << server.log();
    EXPECT_THAT(server.log(), HasSubstr("interrupted by shutdown"));
  }
  const std::string job_dir = state_ + "/jobs/" + interrupted_id;
  EXPECT_THAT(ReadFile(job_dir + "/job.pbtxt"), HasSubstr("state: RUNNING"));
  int chunks = 0;
  for (auto& e : fs::directory_iterator(job_dir + "/chunks")) chunks += e.path().extension() == ".json";
  EXPECT_GE(chunks, 2);
  EXPECT_LT(chunks, kSamples / 8);

  ServerProcess server(Flags());
  ASSERT_EQ(server.WaitHealth("SERVING"), "SERVING") << server.log();
  auto stub = server.Stub();
  // The finished job and its scores are still there.
  {
    grpc::ClientContext ctx;
    v1::GetEvaluationRequest g;
    g.set_id(finished_id);
    v1::Evaluation e;
    ASSERT_TRUE(stub->GetEvaluation(&ctx, g, &e).ok());
    EXPECT_EQ(e.state(), v1::SUCCEEDED);
    EXPECT_EQ(e.result().SerializeAsString(), finished_result.SerializeAsString());
    grpc::Status s;
    EXPECT_EQ(Scores(stub.get(), finished_id, &s), scores_before);
  }
  // The interrupted one resumes from its chunks and finishes.
  v1::Evaluation resumed = WatchToEnd(stub.get(), interrupted_id);
  ASSERT_EQ(resumed.state(), v1::SUCCEEDED) << resumed.error() << server.log();
  EXPECT_THAT(server.log(), HasSubstr(absl::StrCat("job ", interrupted_id, ": resuming with")));
  EXPECT_EQ(resumed.result().overall().samples(), kSamples - 1);
  EXPECT_EQ(resumed.result().overall().skipped(), 1);

  // A fresh run of the same spec gives the same result.
  grpc::Status s;
  v1::Evaluation fresh = Submit(stub.get(), Spec(0, true), &s);
  ASSERT_EQ(fresh.state(), v1::SUCCEEDED);
  EXPECT_DOUBLE_EQ(fresh.result().overall().text_score(), resumed.result().overall().text_score());
  EXPECT_DOUBLE_EQ(fresh.result().overall().image_score(), resumed.result().overall().image_score());
  EXPECT_DOUBLE_EQ(fresh.result().overall().group_score(), resumed.result().overall().group_score());
  std::string h1, h2;
  auto a = NpyFloats(Scores(stub.get(), resumed.id(), &s), &h1);
  auto b = NpyFloats(Scores(stub.get(), fresh.id(), &s), &h2);
  ASSERT_EQ(a.size(), static_cast<size_t>(kSamples) * 4);
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    if (std::isnan(a[k])) {
      EXPECT_TRUE(std::isnan(b[k]));
    } else {
      EXPECT_NEAR(a[k], b[k], 1e-5) << k;
    }
  }

  // Cancel a queued job (the single job worker is busy with the first).
  grpc::ClientContext c1;
  v1::EvaluateBenchmarkRequest r1;
  *r1.mutable_spec() = Spec(0, false);
  auto busy = stub->EvaluateBenchmark(&c1, r1);
  v1::EvaluationEvent ev;
  ASSERT_TRUE(busy->Read(&ev));
  const std::string busy_id = ev.evaluation().id();
  grpc::ClientContext c2;
  v1::EvaluateBenchmarkRequest r2;
  *r2.mutable_spec() = Spec(0, false);
  auto queued = stub->EvaluateBenchmark(&c2, r2);
  ASSERT_TRUE(queued->Read(&ev));
  const std::string queued_id = ev.evaluation().id();
  for (const std::string& id : {queued_id, busy_id}) {
    grpc::ClientContext ctx;
    v1::CancelEvaluationRequest cr;
    cr.set_id(id);
    v1::Evaluation e;
    ASSERT_TRUE(stub->CancelEvaluation(&ctx, cr, &e).ok());
  }
  v1::Evaluation last;
  while (queued->Read(&ev)) last = ev.evaluation();
  EXPECT_TRUE(queued->Finish().ok());
  EXPECT_EQ(last.state(), v1::CANCELLED);
  while (busy->Read(&ev)) last = ev.evaluation();
  EXPECT_TRUE(busy->Finish().ok());
  EXPECT_EQ(last.state(), v1::CANCELLED);
  Scores(stub.get(), queued_id, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  grpc::ClientContext lc;
  v1::ListEvaluationsRequest lr;
  lr.add_states(v1::SUCCEEDED);
  v1::ListEvaluationsResponse list;
  ASSERT_TRUE(stub->ListEvaluations(&lc, lr, &list).ok());
  ASSERT_EQ(list.evaluations_size(), 3);
  EXPECT_EQ(list.evaluations(0).id(), fresh.id());  // newest first
  EXPECT_EQ(list.evaluations(2).id(), finished_id);
  const std::string scrape = server.Scrape();
  EXPECT_EQ(MetricValue(scrape, "eqsim_jobs", {{"state", "SUCCEEDED"}}), 3);
  EXPECT_EQ(MetricValue(scrape, "eqsim_jobs", {{"state", "CANCELLED"}}), 2);
  EXPECT_GT(MetricValue(scrape, "eqsim_eval_samples_total"), 0);
  EXPECT_EQ(server.Stop(SIGTERM), 0);
}

}  // namespace
}  // namespace eqsim::testing
