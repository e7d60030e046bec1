// The client library and the `eqsim` CLI against REAL eqsim-server processes: a tiny native
// model written at test time, a Fashion-MNIST minimal-change benchmark generated at test
// time, every subcommand, dropped / resumed watches, a cancelled job, retries through a
// restarted server, TLS + mTLS + bearer token, and sharded client-side evaluation over two
// servers giving exactly the server-side job's numbers.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/client.h"
#include "eqsim/config/model_config.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bench/generator.h"
#include "model/data/fashion_mnist.h"
#include "model/data/scene.h"
#include "model/image/npy.h"
#include "model/nn/native_init.h"
#include "model/repo/repository.h"
#include "model/text/word_tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/client/test_support.h"

namespace eqsim {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::CommandResult;
using testing::ServerProcess;
using testing::TcpProxy;

constexpr int kBigJobSamples = 12000;

struct World {
  std::string root;       // scratch folder
  std::string data_root;  // the servers' --data-root
  std::string repo;
  std::vector<std::string> images;  // some generated PNG paths
  std::unique_ptr<ServerProcess> a, b;
  std::string error;
};
World* world = nullptr;

void WriteTinyModel(const std::string& repo) {
  std::vector<std::string> corpus = SceneColorNames();
  for (const auto& w : FashionMnistClassNames()) corpus.push_back(w);
  for (const auto& w : FashionMnistClassPlurals()) corpus.push_back(w);
  corpus.push_back("a an and two three four");
  std::vector<std::string> vocab = WordTokenizer::BuildVocabulary(corpus);
  std::string vocab_text;
  for (const auto& w : vocab) vocab_text += w + "\n";
  testing::WriteAll(repo + "/tiny/vocab.txt", vocab_text);
  config::ModelConfig cfg;
  cfg.set_name("tiny");
  cfg.set_backend(config::ModelConfig::NATIVE);
  cfg.set_embed_dim(32);
  cfg.mutable_image()->set_recipe(config::ImagePreprocess::NATIVE);
  cfg.mutable_image()->set_size(32);
  cfg.mutable_tokenizer()->set_kind(config::TokenizerConfig::WORD);
  cfg.mutable_tokenizer()->set_vocab_file("vocab.txt");
  auto* n = cfg.mutable_native();
  n->set_image_width(8);
  n->set_image_stages(2);
  n->set_text_width(32);
  n->set_text_layers(1);
  n->set_text_heads(2);
  cfg.set_device(config::ModelConfig::CPU);
  absl::Status s = WriteModelConfig(cfg, repo + "/tiny/config.pbtxt");
  if (s.ok()) {
    s = WriteInitialNativeWeights(cfg, kWordSpecialTokens + static_cast<int>(vocab.size()), 11,
                                  repo + "/tiny/1");
  }
  if (!s.ok()) world->error = absl::StrCat("writing the model: ", s.ToString());
}

// A Winoground file of many samples over few images with distinct captions: slow enough to
// cancel or interrupt (every caption is embedded).
void WriteBigJob(const std::string& path) {
  std::string out;
  for (int i = 0; i < kBigJobSamples; ++i) {
    nlohmann::json j = {{"id", i},
                        {"caption_0", absl::StrCat("a red bag and ", i, " blue shoes")},
                        {"caption_1", absl::StrCat("a blue bag and ", i, " red shoes")},
                        {"image_0", "location/" + std::to_string(i % 5) + "_0"},
                        {"image_1", "location/" + std::to_string(i % 5) + "_1"},
                        {"collapsed_tag", "big"}};
    out += j.dump() + "\n";
  }
  testing::WriteAll(path, out);
}

std::vector<std::string> ServerArgs(const std::string& name) {
  std::vector<std::string> args = {
      "--model_repository=" + world->repo, "--data_root=" + world->data_root,
      "--state_dir=" + world->root + "/" + name + "/state", "--job_chunk_size=256",
      "--drain_timeout_s=2"};
  // Server A runs jobs in small embedding calls: the big job then lasts long enough (seconds)
  // to be cancelled, cut and crashed in the middle.
  if (name == "a") args.push_back("--job_batch_size=2");
  return args;
}

// The long evaluation job of the watch tests (enough samples to still run when it is cut).
v1::EvaluationSpec BigJobSpec() {
  v1::EvaluationSpec spec;
  spec.set_format(v1::WINOGROUND);
  spec.set_annotation_path("bench/annotations/big.jsonl");
  spec.set_image_root("bench");
  return spec;
}

class ClientServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    world = new World();
    const std::string bin = testing::BinDir() + "/eqsim-server";
    if (!fs::exists(bin)) {
      world->error = "eqsim-server is not built (" + bin + ")";
      return;
    }
    world->root = (fs::temp_directory_path() / ("eqsim_client_it_" + std::to_string(getpid()))).string();
    fs::remove_all(world->root);
    world->data_root = world->root + "/data";
    world->repo = world->root + "/repo";
    GeneratorOptions g;
    g.out_dir = world->data_root + "/bench";
    g.per_subset = 10;
    auto gen = GenerateBenchmark(g);
    if (!gen.ok()) {
      world->error = "generating the benchmark: " + gen.status().ToString();
      return;
    }
    for (const auto& e : fs::directory_iterator(g.out_dir + "/location"))
      if (e.path().extension() == ".png") world->images.push_back(e.path().string());
    std::sort(world->images.begin(), world->images.end());
    WriteBigJob(g.out_dir + "/annotations/big.jsonl");
    WriteTinyModel(world->repo);
    if (!world->error.empty()) return;
    world->a = std::make_unique<ServerProcess>(ServerArgs("a"), world->root + "/a");
    world->b = std::make_unique<ServerProcess>(ServerArgs("b"), world->root + "/b");
    if (!world->a->Start() || !world->b->Start()) {
      world->error = "eqsim-server did not start:\n" + world->a->log() + world->b->log();
    }
  }
  static void TearDownTestSuite() {
    if (world->a) world->a->Stop();
    if (world->b) world->b->Stop();
    // EQSIM_KEEP_TEST_DIR=1 keeps the model repository and benchmark for manual runs.
    if (!world->root.empty() && std::getenv("EQSIM_KEEP_TEST_DIR") == nullptr) {
      fs::remove_all(world->root);
    }
    delete world;
    world = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(world->error.empty()) << world->error;
    scratch_ = world->root + "/t_" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(scratch_);
  }

  std::unique_ptr<Client> MakeClient(std::vector<std::string> targets, int max_items = 64) {
    ClientOptions o;
    o.targets = std::move(targets);
    o.timeout = absl::Seconds(60);
    o.max_items_per_request = max_items;
    o.retry.max_attempts = 8;
    auto c = Client::Create(o);
    EXPECT_TRUE(c.ok()) << c.status();
    // Wait until the model is loaded.
    for (int i = 0; i < 600; ++i) {
      auto m = (*c)->ListModels();
      if (m.ok() && m->models_size() > 0 && m->models(0).state() == v1::ModelStatus::READY) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return *std::move(c);
  }

  CommandResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), testing::BinDir() + "/eqsim");
    return testing::Run(args, scratch_);
  }
  static nlohmann::json Json(const CommandResult& r) {
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out << "\nstderr: " << r.err;
    return j;
  }

  std::string scratch_;
};

TEST_F(ClientServerTest, ModelsListsTheTinyModel) {
  MakeClient({world->a->target()});
  CommandResult r = Cli({"models", "--target", world->a->target(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = Json(r);
  ASSERT_EQ(j["models"].size(), 1u);
  EXPECT_EQ(j["models"][0]["name"], "tiny");
  EXPECT_EQ(j["models"][0]["state"], "READY");
  EXPECT_EQ(j["models"][0]["dim"], 32);
  r = Cli({"models", "--target", world->a->target()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tiny"));
  EXPECT_THAT(r.out, HasSubstr("READY"));
}

TEST_F(ClientServerTest, EmbedCliMatchesLibraryNpyAndIsNormalised) {
  auto client = MakeClient({world->a->target()});
  const std::string npy = scratch_ + "/emb.npy";
  CommandResult r = Cli({"embed", "--target", world->a->target(), "--image", world->images[0],
                         "--text", "two red bags, and a blue sneaker", "--json", "--output", npy});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = Json(r);
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_EQ(j["dim"], 32);
  ASSERT_EQ(j["embeddings"].size(), 2u);
  EXPECT_EQ(j["embeddings"][0]["kind"], "image");
  EXPECT_EQ(j["embeddings"][1]["source"], "two red bags, and a blue sneaker");  // commas kept

  auto img = Input::ImageFile(world->images[0]);
  ASSERT_TRUE(img.ok());
  auto lib = client->Embed({*img, Input::Text("two red bags, and a blue sneaker")});
  ASSERT_TRUE(lib.ok()) << lib.status();
  auto arr = ReadNpyFile(npy);
  ASSERT_TRUE(arr.ok()) << arr.status();
  EXPECT_EQ(arr->shape, (std::vector<int64_t>{2, 32}));
  const float* from_npy = reinterpret_cast<const float*>(arr->data.data());
  for (int i = 0; i < 2; ++i) {
    double norm = 0;
    for (int k = 0; k < 32; ++k) {
      const float v = j["embeddings"][i]["values"][k].get<float>();
      EXPECT_NEAR(v, lib->row(i)[k], 1e-5);
      EXPECT_EQ(from_npy[i * 32 + k], v);
      norm += v * v;
    }
    EXPECT_NEAR(norm, 1.0, 1e-4);
  }
  // Raw pixels sent as BMP embed like the PNG file they came from (lossless both ways).
  auto data = LoadFashionMnist(FashionMnistSplit::kTest);
  ASSERT_TRUE(data.ok());
  Scene scene;
  scene.items = {{0, 0, 3}, {7, 2, 9}};
  cv::Mat rgb = RenderScene(scene, *data);
  auto bmp = Input::ImageRgb(rgb.data, rgb.cols, rgb.rows, static_cast<int64_t>(rgb.step));
  ASSERT_TRUE(bmp.ok());
  auto e2 = client->Embed({*bmp});
  ASSERT_TRUE(e2.ok()) << e2.status();
  EXPECT_EQ(e2->dim, 32);
}

TEST_F(ClientServerTest, ChunkedEmbedEqualsOneRequestInOrder) {
  auto small = MakeClient({world->a->target()}, 7);
  auto whole = MakeClient({world->a->target()}, 1000);
  std::vector<Input> items;
  for (int i = 0; i < 60; ++i) {
    if (i % 2 == 0) {
      auto in = Input::ImageFile(world->images[i % world->images.size()]);
      ASSERT_TRUE(in.ok());
      items.push_back(*in);
    } else {
      items.push_back(Input::Text(absl::StrCat("a red bag and ", i, " shoes")));
    }
  }
  auto a = small->Embed(items);
  auto b = whole->Embed(items);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->rows, 60);
  for (int i = 0; i < 60; ++i)
    for (int k = 0; k < 32; ++k) ASSERT_NEAR(a->row(i)[k], b->row(i)[k], 1e-5) << i;
  // Distinct items really differ (the test would notice a shuffled order).
  EXPECT_GT(std::abs(a->row(1)[0] - a->row(3)[0]) + std::abs(a->row(0)[0] - a->row(2)[0]), 1e-6);
}

TEST_F(ClientServerTest, ScoreIsTheDotProductOfEmbeddings) {
  auto client = MakeClient({world->a->target()}, 3);
  std::vector<std::string> images;
  std::vector<Input> inputs;
  for (int i = 0; i < 5; ++i) {
    auto in = Input::ImageFile(world->images[i]);
    ASSERT_TRUE(in.ok());
    images.push_back(in->data);
    inputs.push_back(*in);
  }
  std::vector<std::string> texts = {"a red bag", "two blue shoes", "a green shirt", "a bag",
                                    "three white sandals"};
  for (const auto& t : texts) inputs.push_back(Input::Text(t));
  auto emb = client->Embed(inputs);
  ASSERT_TRUE(emb.ok()) << emb.status();
  ScoreOptions so;
  so.softmax = true;
  auto s = client->Score(images, texts, so);  // 2 x 2 tiles of at most 3 items
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->rows, 5);
  ASSERT_EQ(s->cols, 5);
  for (int i = 0; i < 5; ++i) {
    double psum = 0;
    for (int j = 0; j < 5; ++j) {
      double dot = 0;
      for (int k = 0; k < 32; ++k) dot += emb->row(i)[k] * emb->row(5 + j)[k];
      EXPECT_NEAR(s->cosine[i * 5 + j], dot, 1e-4);
      EXPECT_NEAR(s->logits[i * 5 + j], s->logit_scale * s->cosine[i * 5 + j], 1e-3);
      psum += s->probs[i * 5 + j];
    }
    EXPECT_NEAR(psum, 1.0, 1e-5);
  }
  CommandResult r = Cli({"score", "--target", world->a->target(), "--image", world->images[0],
                         "--image", world->images[1], "--text", "a red bag", "--text",
                         "two blue shoes", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = Json(r);
  ASSERT_EQ(j["cosine"].size(), 4u);
  EXPECT_NEAR(j["cosine"][1].get<double>(), s->cosine[1], 1e-4);
  r = Cli({"score", "--target", world->a->target(), "--image", world->images[0], "--image",
           world->images[1], "--text", "a red bag", "--text", "two blue shoes", "--pairwise"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("two blue shoes"));
}

TEST_F(ClientServerTest, ErrorsKeepCodeAndNameTheItem) {
  auto client = MakeClient({world->a->target()}, 4);
  std::vector<Input> items;
  for (int i = 0; i < 10; ++i) items.push_back(Input::Text(absl::StrCat("a bag ", i)));
  items[6] = Input::Image("this is not an image");
  auto emb = client->Embed(items);
  ASSERT_EQ(emb.status().code(), absl::StatusCode::kInvalidArgument) << emb.status();
  EXPECT_THAT(emb.status().message(), HasSubstr("item 6"));
  EmbedOptions eo;
  eo.model.name = "no-such-model";
  auto missing = client->Embed({Input::Text("a bag")}, eo);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_THAT(missing.status().message(), HasSubstr("no-such-model"));

  const std::string bad = scratch_ + "/bad.png";
  testing::WriteAll(bad, "not a png");
  CommandResult r = Cli({"embed", "--target", world->a->target(), "--image", bad});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT"));
  r = Cli({"embed", "--target", world->a->target(), "--text", "x", "--model", "no-such-model"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
  r = Cli({"embed", "--target", world->a->target(), "--image", scratch_ + "/missing.png"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("missing.png"));
}

TEST_F(ClientServerTest, UsageErrorsExitTwo) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"embed", "--bogus"},
                                             {"embed", "--rate=3", "--text=x"},
                                             {"eval", "get"},
                                             {"eval", "frobnicate"},
                                             {"eval", "submit", "--format", "nope", "--annotation", "x"},
                                             {"loadtest", "--mix", "image=abc"},
                                             {"embed", "--timeout", "soon", "--text", "x"},
                                             {"score", "--text", "x"},
                                             {"nonsense"}}) {
    CommandResult r = Cli(args);
    EXPECT_EQ(r.exit_code, 2) << absl::StrJoin(args, " ") << "\n" << r.err;
    EXPECT_FALSE(r.err.empty());
  }
  CommandResult r = Cli({"eval", "watch", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("--watch-reconnects"));
  EXPECT_THAT(r.out, HasSubstr("--tls-ca"));
}

TEST_F(ClientServerTest, EvalSubmitWatchGetListScores) {
  MakeClient({world->a->target()});
  const std::string t = world->a->target();
  CommandResult r = Cli({"eval", "submit", "--target", t, "--format", "winoground", "--annotation",
                         "bench/annotations/winoground.jsonl", "--image-root", "bench",
                         "--keep-scores", "--label", "cli test"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string id(absl::StripAsciiWhitespace(r.out));
  ASSERT_FALSE(id.empty());
  r = Cli({"eval", "watch", id, "--target", t, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = Json(r);
  EXPECT_EQ(j["state"], "SUCCEEDED");
  EXPECT_EQ(j["result"]["overall"]["samples"], "40");  // int64 is a string in proto JSON
  EXPECT_EQ(j["result"]["subsets"].size(), 4u);

  r = Cli({"eval", "get", id, "--target", t});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("succeeded"));
  EXPECT_THAT(r.out, HasSubstr("overall"));
  r = Cli({"eval", "list", "--target", t, "--state", "succeeded", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(id));
  r = Cli({"eval", "list", "--target", t, "--state", "cancelled", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, Not(HasSubstr(id)));

  const std::string npy = scratch_ + "/scores.npy";
  r = Cli({"eval", "scores", id, "--target", t, "--output", npy});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto arr = ReadNpyFile(npy);
  ASSERT_TRUE(arr.ok()) << arr.status();
  EXPECT_EQ(arr->shape, (std::vector<int64_t>{40, 4}));
  EXPECT_EQ(arr->dtype, "<f4");

  r = Cli({"eval", "get", "no-such-job", "--target", t});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
  r = Cli({"eval", "submit", "--target", t, "--format", "winoground", "--annotation",
           "bench/annotations/missing.jsonl", "--image-root", "bench", "--watch"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 2);  // the server refused it or the job failed: 1 or 3
}

// eval-local reads the benchmark here and embeds through BOTH servers; its numbers must equal
// the server-side job's exactly.
TEST_F(ClientServerTest, ShardedEvalLocalEqualsServerSideJob) {
  auto client = MakeClient({world->a->target()});
  MakeClient({world->b->target()});
  for (const auto& [format, annotation] :
       std::vector<std::pair<std::string, std::string>>{
           {"winoground", "bench/annotations/winoground.jsonl"},
           {"eqben-pairs", "bench/annotations/location.json"}}) {
    v1::EvaluationSpec spec;
    auto f = format == "winoground" ? v1::WINOGROUND : v1::EQBEN_PAIRS;
    spec.set_format(f);
    spec.set_annotation_path(annotation);
    spec.set_image_root("bench");
    spec.set_keep_scores(true);
    auto job = client->SubmitEvaluation(spec, [](const v1::Evaluation&) {});
    ASSERT_TRUE(job.ok()) << job.status();
    ASSERT_EQ(job->state(), v1::SUCCEEDED) << job->error();
    const std::string server_npy = scratch_ + "/server.npy";
    ASSERT_TRUE(client->DownloadScores(job->id(), server_npy).ok());

    TcpProxy pa(world->a->port()), pb(world->b->port());
    const std::string local_npy = scratch_ + "/local.npy";
    CommandResult r = Cli({"eval-local", "--target", pa.target(), "--target", pb.target(),
                           "--format", format, "--annotation",
                           world->data_root + "/" + annotation, "--image-root",
                           world->data_root + "/bench", "--json", "--batch-size", "16",
                           "--max-items-per-request", "4", "--scores-output", local_npy});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_GT(pa.connections(), 0);
    EXPECT_GT(pb.connections(), 0);
    nlohmann::json j = Json(r);
    const auto& res = job->result();
    ASSERT_EQ(j["subsets"].size(), static_cast<size_t>(res.subsets_size())) << r.out;
    for (int i = 0; i < res.subsets_size(); ++i) {
      const auto& js = j["subsets"][i];
      EXPECT_EQ(js["subset"], res.subsets(i).subset());
      EXPECT_EQ(js["samples"].get<int64_t>(), res.subsets(i).samples());
      EXPECT_EQ(js["text_score"].get<double>(), res.subsets(i).text_score()) << format;
      EXPECT_EQ(js["image_score"].get<double>(), res.subsets(i).image_score()) << format;
      EXPECT_EQ(js["group_score"].get<double>(), res.subsets(i).group_score()) << format;
    }
    EXPECT_EQ(j["overall"]["group_score"].get<double>(), res.overall().group_score());
    auto s1 = ReadNpyFile(server_npy);
    auto s2 = ReadNpyFile(local_npy);
    ASSERT_TRUE(s1.ok() && s2.ok());
    ASSERT_EQ(s1->shape, s2->shape);
    const float* x = reinterpret_cast<const float*>(s1->data.data());
    const float* y = reinterpret_cast<const float*>(s2->data.data());
    for (int64_t k = 0; k < s1->num_elements(); ++k) ASSERT_NEAR(x[k], y[k], 1e-5) << k;
  }
}

// A port nothing listens on (bound, then closed).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST_F(ClientServerTest, HealthServingDeadPortAndWait) {
  MakeClient({world->a->target()});  // loaded: the server reports SERVING
  CommandResult r = Cli({"health", "--target", world->a->target(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  nlohmann::json j = Json(r);
  EXPECT_EQ(j["status"], "SERVING");
  EXPECT_EQ(j["target"], world->a->target());
  r = Cli({"health", "--target", world->a->target()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SERVING"));
  r = Cli({"health", "--target", world->a->target(), "--service", "eqsim.v1.SimilarityService",
           "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Json(r)["service"], "eqsim.v1.SimilarityService");
  r = Cli({"health", "--target", world->a->target(), "--service", "no.such.Service", "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(Json(r)["status"], "SERVICE_UNKNOWN");
  // Several targets: SERVING only when all are.
  r = Cli({"health", "--target", world->a->target(), "--target", world->b->target(), "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Json(r)["targets"].size(), 2u);

  const std::string dead = absl::StrCat("127.0.0.1:", FreePort());
  r = Cli({"health", "--target", dead, "--json", "--timeout", "3s"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(Json(r)["status"], "UNREACHABLE");
  r = Cli({"health", "--target", world->a->target(), "--target", dead, "--json"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(Json(r)["status"], "UNREACHABLE");

  // --wait: the server starts (and loads its model) while health polls; it ends SERVING.
  const int port = FreePort();
  ServerProcess late(ServerArgs("late"), world->root + "/late");
  CommandResult waited;
  const std::string waited_scratch = scratch_ + "/wait";
  fs::create_directories(waited_scratch);
  std::thread poller([&] {
    waited = testing::Run({testing::BinDir() + "/eqsim", "health", "--target",
                           absl::StrCat("127.0.0.1:", port), "--wait", "120s",
                           "--wait-interval", "100ms", "--json"},
                          waited_scratch);
  });
  absl::SleepFor(absl::Milliseconds(1500));  // let it fail a few checks first
  const bool started = late.Start(port);
  poller.join();
  ASSERT_TRUE(started) << late.log();
  EXPECT_EQ(waited.exit_code, 0) << waited.out << waited.err;
  EXPECT_EQ(Json(waited)["status"], "SERVING");
  EXPECT_THAT(waited.err, HasSubstr("waiting for SERVING"));  // progress on stderr
  late.Stop();
  // ... and a --wait that runs out exits 1.
  r = Cli({"health", "--target", absl::StrCat("127.0.0.1:", port), "--wait", "1s",
           "--wait-interval", "200ms"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("not SERVING after 1s"));
}

// eval-local --shard-index/--num-shards: the shards' per-subset counts add up to the
// unsharded run's exactly, and merge_shards.py gives the unsharded fractions.
TEST_F(ClientServerTest, EvalLocalShardsMergeToTheUnshardedResult) {
  MakeClient({world->a->target()});
  const std::vector<std::string> base = {
      "eval-local", "--target", world->a->target(), "--format", "winoground", "--annotation",
      world->data_root + "/bench/annotations/winoground.jsonl", "--image-root",
      world->data_root + "/bench", "--json", "--noprogress"};
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return Cli(a);
  };
  CommandResult r = run({});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json whole = Json(r);
  ASSERT_EQ(whole["overall"]["samples"], 40) << r.out;
  const std::vector<std::string> counts = {"samples", "skipped", "text_correct",
                                           "image_correct", "group_correct"};
  for (const auto& s : whole["subsets"]) {
    // Counts and fractions agree.
    EXPECT_DOUBLE_EQ(s["text_score"].get<double>(),
                     s["text_correct"].get<double>() / s["samples"].get<double>());
  }
  const int kShards = 3;  // 40 samples: 13 + 13 + 14, shard borders inside subsets
  const std::string dir = scratch_ + "/shards";
  fs::create_directories(dir);
  std::map<std::string, std::map<std::string, int64_t>> sum;
  int64_t covered = 0;
  for (int i = 0; i < kShards; ++i) {
    r = run({"--shard-index", std::to_string(i), "--num-shards", std::to_string(kShards)});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    testing::WriteAll(absl::StrCat(dir, "/shard-", i, ".json"), r.out);
    nlohmann::json j = Json(r);
    EXPECT_EQ(j["shard"]["index"], i);
    EXPECT_EQ(j["shard"]["samples_begin"], 40 * i / kShards);
    EXPECT_EQ(j["shard"]["samples_end"], 40 * (i + 1) / kShards);
    EXPECT_EQ(j["model"], "tiny");
    covered += j["overall"]["samples"].get<int64_t>() + j["overall"]["skipped"].get<int64_t>();
    for (const auto& s : j["subsets"])
      for (const auto& c : counts) sum[s["subset"]][c] += s[c].get<int64_t>();
  }
  EXPECT_EQ(covered, 40);
  ASSERT_EQ(sum.size(), whole["subsets"].size());
  for (const auto& s : whole["subsets"])
    for (const auto& c : counts)
      EXPECT_EQ(sum[s["subset"]][c], s[c].get<int64_t>()) << s["subset"] << " " << c;

  // The deploy merge tool gives exactly the unsharded fractions.
  r = testing::Run({"/usr/bin/python3",
                    std::string(EQSIM_SOURCE_DIR) + "/deploy/jobs/eval-sharded/merge_shards.py",
                    dir, "--shards", std::to_string(kShards)},
                   scratch_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json merged = Json(r);
  ASSERT_EQ(merged["subsets"].size(), whole["subsets"].size());
  for (size_t k = 0; k < merged["subsets"].size(); ++k) {
    for (const char* key : {"subset", "samples", "skipped", "text_score", "image_score",
                            "group_score"})
      EXPECT_EQ(merged["subsets"][k][key], whole["subsets"][k][key]) << k << " " << key;
  }
  EXPECT_EQ(merged["overall"]["group_score"], whole["overall"]["group_score"]);

  // More shards than samples: an empty shard still succeeds and names the served model.
  r = run({"--limit", "1", "--subsets", "attribute", "--shard-index", "0", "--num-shards", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json empty = Json(r);
  EXPECT_EQ(empty["overall"]["samples"], 0) << r.out;
  EXPECT_EQ(empty["model"], "tiny");
  EXPECT_GT(empty["version"].get<int64_t>(), 0);
}

// eval compare: one table, per job the numbers `eval get --json` reports, in the row of
// their subset; --json is the array of the evaluations; exit 3 for a job that did not succeed.
TEST_F(ClientServerTest, EvalCompareShowsEveryJobsNumbers) {
  auto client = MakeClient({world->a->target()});
  const std::string t = world->a->target();
  std::vector<std::string> ids;
  for (const auto& [annotation, label] : std::vector<std::pair<std::string, std::string>>{
           {"bench/annotations/winoground.jsonl", "wino"},
           {"bench/annotations/location.json", "loc"}}) {
    v1::EvaluationSpec spec;
    spec.set_format(label == "wino" ? v1::WINOGROUND : v1::EQBEN_PAIRS);
    spec.set_annotation_path(annotation);
    spec.set_image_root("bench");
    spec.set_label(label);
    auto job = client->SubmitEvaluation(spec, [](const v1::Evaluation&) {});
    ASSERT_TRUE(job.ok()) << job.status();
    ASSERT_EQ(job->state(), v1::SUCCEEDED) << job->error();
    ids.push_back(job->id());
  }
  CommandResult r = Cli({"eval", "compare", ids[0], ids[1], "--target", t});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string table = r.out;
  EXPECT_THAT(table, HasSubstr("tiny:1 (wino)"));
  EXPECT_THAT(table, HasSubstr("tiny:1 (loc)"));
  // Table lines by their first word.
  std::map<std::string, std::string> lines;
  for (absl::string_view line : absl::StrSplit(table, '\n')) {
    std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (!words.empty()) lines[words[0]] = std::string(line);
  }
  auto pct = [](const nlohmann::json& v) {
    return absl::StrFormat("%.2f", 100.0 * v.get<double>());
  };
  for (size_t k = 0; k < ids.size(); ++k) {
    r = Cli({"eval", "get", ids[k], "--target", t, "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    nlohmann::json ev = Json(r);
    std::vector<nlohmann::json> rows(ev["result"]["subsets"].begin(),
                                     ev["result"]["subsets"].end());
    nlohmann::json overall = ev["result"]["overall"];
    overall["subset"] = "overall";
    rows.push_back(overall);
    for (const auto& row : rows) {
      const std::string name = row["subset"];
      ASSERT_TRUE(lines.count(name)) << name << " missing from\n" << table;
      // The job's cells are the k-th '|'-separated part of the row.
      std::vector<std::string> parts = absl::StrSplit(lines[name], '|');
      ASSERT_EQ(parts.size(), ids.size() + 1) << lines[name];
      std::vector<std::string> cells = absl::StrSplit(parts[k + 1], ' ', absl::SkipEmpty());
      ASSERT_EQ(cells.size(), 4u) << lines[name];
      EXPECT_EQ(cells[0], row["samples"].get<std::string>()) << name;  // int64: a string
      EXPECT_EQ(cells[1], pct(row["text_score"])) << name;
      EXPECT_EQ(cells[2], pct(row["image_score"])) << name;
      EXPECT_EQ(cells[3], pct(row["group_score"])) << name;
    }
  }
  // Subsets one job lacks show '-' in its columns.
  ASSERT_TRUE(lines.count("attribute")) << table;
  EXPECT_THAT(lines["attribute"], HasSubstr("-"));

  r = Cli({"eval", "compare", ids[0], ids[1], "--target", t, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json arr = Json(r);
  ASSERT_TRUE(arr.is_array());
  ASSERT_EQ(arr.size(), 2u);
  EXPECT_EQ(arr[0]["id"], ids[0]);
  EXPECT_EQ(arr[1]["id"], ids[1]);
  EXPECT_EQ(arr[1]["result"]["overall"]["group_score"].get<double>(),
            client->GetEvaluation(ids[1])->result().overall().group_score());

  r = Cli({"eval", "compare", ids[0], "no-such-job", "--target", t});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
}

TEST_F(ClientServerTest, CancelledJobEndsWatchWithExitThree) {
  auto client = MakeClient({world->a->target()});
  const v1::EvaluationSpec spec = BigJobSpec();
  auto job = client->SubmitEvaluation(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string t = world->a->target();
  CommandResult r = Cli({"eval", "cancel", job->id(), "--target", t});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Cli({"eval", "watch", job->id(), "--target", t});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("cancelled"));
  auto ev = client->GetEvaluation(job->id());
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(ev->state(), v1::CANCELLED);
  EXPECT_LT(ev->progress().done(), kBigJobSamples);
  // eval compare of a job that did not succeed: its columns are '-', exit 3.
  r = Cli({"eval", "compare", job->id(), "--target", t});
  EXPECT_EQ(r.exit_code, 3) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("[cancelled]"));
  EXPECT_THAT(r.err, HasSubstr("cancelled"));
}

// The watch stream is cut under the client's feet (a proxy resets every connection); the
// client re-issues WatchEvaluation and follows the job to the end. The server is stopped
// (SIGSTOP) while the stream is cut, so the job cannot have ended before the cut.
TEST_F(ClientServerTest, WatchSurvivesDroppedStreams) {
  MakeClient({world->a->target()});
  TcpProxy proxy(world->a->port());
  ClientOptions o;
  o.targets = {proxy.target()};
  o.retry.initial_backoff = absl::Milliseconds(50);
  auto client = Client::Create(o);
  ASSERT_TRUE(client.ok());
  const v1::EvaluationSpec spec = BigJobSpec();
  auto job = (*client)->SubmitEvaluation(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  world->a->Signal(SIGSTOP);
  int64_t last_done = -1;
  std::vector<std::string> causes;
  absl::StatusOr<v1::Evaluation> final_state;
  std::thread watcher([&] {
    final_state = (*client)->WatchEvaluation(
        job->id(),
        [&](const v1::Evaluation& ev) {
          EXPECT_GE(ev.progress().done(), last_done);
          last_done = ev.progress().done();
        },
        [&](const absl::Status& cause, int) { causes.push_back(cause.ToString()); });
  });
  absl::SleepFor(absl::Seconds(1));  // the watch call is on the wire, waiting for events
  proxy.DropAll();
  absl::SleepFor(absl::Milliseconds(300));
  world->a->Signal(SIGCONT);
  watcher.join();
  ASSERT_TRUE(final_state.ok()) << final_state.status();
  EXPECT_EQ(final_state->state(), v1::SUCCEEDED) << final_state->error();
  EXPECT_EQ(final_state->result().overall().samples() + final_state->result().overall().skipped(),
            kBigJobSamples);
  ASSERT_GE(causes.size(), 1u) << "the cut must cause a reconnect";
  EXPECT_THAT(causes[0], HasSubstr("UNAVAILABLE"));
  EXPECT_GE(proxy.connections(), 2);
}

// Server B goes away (SIGTERM) and comes back on the same port while requests retry.
TEST_F(ClientServerTest, RetriesThroughARestartedServer) {
  MakeClient({world->b->target()});
  const int port = world->b->port();
  ClientOptions o;
  o.targets = {world->b->target()};
  o.retry.max_attempts = 40;
  o.retry.initial_backoff = absl::Milliseconds(100);
  o.retry.max_backoff = absl::Milliseconds(500);
  o.max_reconnect_backoff = absl::Milliseconds(300);
  auto client = Client::Create(o);
  ASSERT_TRUE(client.ok());
  auto before = (*client)->Embed({Input::Text("a red bag")});
  ASSERT_TRUE(before.ok()) << before.status();
  world->b->Stop();
  // Fails with UNAVAILABLE (connection refused, model loading) until B is back. (The server
  // is restarted from this thread: children die with the thread that forked them.)
  absl::StatusOr<Embeddings> after;
  std::thread caller([&] { after = (*client)->Embed({Input::Text("a red bag")}); });
  absl::SleepFor(absl::Seconds(1));
  const bool restarted = world->b->Start(port);
  caller.join();
  ASSERT_TRUE(restarted) << world->b->log();
  ASSERT_TRUE(after.ok()) << after.status();
  for (int k = 0; k < 32; ++k) EXPECT_NEAR(after->row(0)[k], before->row(0)[k], 1e-5);
}

TEST_F(ClientServerTest, TlsMutualTlsAndBearerToken) {
  const std::string d = scratch_;
  const std::string script = absl::StrCat(
      "set -e; exec >/dev/null 2>&1; cd ", testing::ShellQuote(d), ";",
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca.key -out ca.pem;",
      "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr;",
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext;",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem;",
      "openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr;",
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem;",
      "printf 's3cret-token\\n' > token; printf 'wrong' > wrong");
  ASSERT_EQ(std::system(script.c_str()), 0);
  std::vector<std::string> args = ServerArgs("tls");
  for (const std::string& a :
       {"--tls_cert=" + d + "/server.pem", "--tls_key=" + d + "/server.key",
        "--tls_client_ca=" + d + "/ca.pem", "--auth_token_file=" + d + "/token"})
    args.push_back(a);
  ServerProcess server(args, d + "/srv");
  ASSERT_TRUE(server.Start()) << server.log();
  const std::string t = server.target();
  std::vector<std::string> tls = {"--tls-ca", d + "/ca.pem", "--tls-cert", d + "/client.pem",
                                  "--tls-key", d + "/client.key"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"models", "--target", t, "--retries", "1", "--json"};
    a.insert(a.end(), extra.begin(), extra.end());
    return Cli(a);
  };
  std::vector<std::string> ok_args = tls;
  ok_args.push_back("--token-file");
  ok_args.push_back(d + "/token");
  CommandResult r;
  for (int i = 0; i < 100; ++i) {  // the model may still be loading
    r = with(ok_args);
    if (r.exit_code == 0 && r.out.find("READY") != std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("tiny"));
  r = with(tls);  // no token
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  std::vector<std::string> wrong = tls;
  wrong.push_back("--token-file");
  wrong.push_back(d + "/wrong");
  r = with(wrong);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  r = with({"--tls-ca", d + "/ca.pem", "--token-file", d + "/token"});  // no client cert
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
  r = with({"--token-file", d + "/token"});  // plaintext against TLS
  EXPECT_EQ(r.exit_code, 1);

  // eqsim health over mTLS: the token is not needed (health is exempt) and does not hurt.
  auto health = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"health", "--target", t, "--json", "--timeout", "5s"};
    a.insert(a.end(), extra.begin(), extra.end());
    return Cli(a);
  };
  r = health(ok_args);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Json(r)["status"], "SERVING");
  r = health(tls);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Json(r)["status"], "SERVING");
  r = health({"--token-file", d + "/token"});  // plaintext against TLS: no answer
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(Json(r)["status"], "SERVING");
  server.Stop();
}

TEST_F(ClientServerTest, LoadtestReportsThroughputAndPercentiles) {
  MakeClient({world->a->target()});
  CommandResult r = Cli({"loadtest", "--target", world->a->target(), "--duration", "2s",
                         "--warmup", "200ms", "--concurrency", "4", "--image-size", "32",
                         "--pool-size", "16", "--texts-per-request", "2", "--json",
                         "--server-pid", std::to_string(world->a->pid()),
                         "--rss-sample-every", "500ms"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = Json(r);
  EXPECT_GT(j["all"]["ok"].get<int64_t>(), 0);
  EXPECT_EQ(j["all"]["errors"].get<int64_t>(), 0) << r.out;
  EXPECT_GT(j["throughput_rps"].get<double>(), 0);
  for (const char* kind : {"image", "text", "score"}) {
    const auto& k = j["by_kind"][kind];
    EXPECT_GT(k["ok"].get<int64_t>(), 0) << kind;
    EXPECT_LE(k["p50_ms"].get<double>(), k["p90_ms"].get<double>());
    EXPECT_LE(k["p90_ms"].get<double>(), k["p99_ms"].get<double>());
    EXPECT_LE(k["p99_ms"].get<double>(), k["max_ms"].get<double>());
  }
  EXPECT_EQ(j["by_kind"]["text"]["items"].get<int64_t>(), 2 * j["by_kind"]["text"]["ok"].get<int64_t>());
  // RSS before any request, at the end of the warm-up, at the end, and a series in between.
  const auto& rss = j["server_rss_kib"];
  for (const char* k : {"before", "start", "end", "max"}) EXPECT_GT(rss[k].get<int64_t>(), 0) << k;
  EXPECT_GE(rss["max"].get<int64_t>(), rss["end"].get<int64_t>());
  ASSERT_GE(rss["samples"].size(), 4u) << rss.dump();  // 0 s, ~0.5, ~1.0, ~1.5 s, end
  EXPECT_EQ(rss["samples"].front()[0].get<double>(), 0.0);
  EXPECT_EQ(rss["samples"].front()[1].get<int64_t>(), rss["before"].get<int64_t>());
  EXPECT_EQ(rss["samples"].back()[1].get<int64_t>(), rss["end"].get<int64_t>());
  EXPECT_GT(rss["samples"].back()[0].get<double>(), 2.0);  // warm-up + duration
  // Open loop at a fixed rate, human-readable output.
  r = Cli({"loadtest", "--target", world->a->target(), "--duration", "1s", "--warmup", "0s",
           "--rate", "20", "--concurrency", "4", "--mix", "text=1", "--pool-size", "8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("open loop at 20.0 req/s"));
  EXPECT_THAT(r.out, HasSubstr("p99 ms"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr("server RSS")));  // no --server-pid
}

// kill -STOP: the server stops answering without closing anything; keep-alive pings notice,
// the watch reconnects (attempts hang while it is stopped) and, after kill -CONT, follows the
// job to the end.
TEST_F(ClientServerTest, WatchSurvivesAPausedServer) {
  MakeClient({world->a->target()});
  ClientOptions o;
  o.targets = {world->a->target()};
  o.keepalive_time = absl::Milliseconds(500);
  o.keepalive_timeout = absl::Milliseconds(500);
  o.retry.initial_backoff = absl::Milliseconds(100);
  o.retry.max_backoff = absl::Milliseconds(500);
  o.max_reconnect_backoff = absl::Milliseconds(300);
  // With these short backoffs 30 reconnections last only a few seconds; on a loaded machine the
  // resumed server may take longer than that to answer again. Giving up is tested elsewhere.
  o.watch_max_reconnects = 200;
  auto client = Client::Create(o);
  ASSERT_TRUE(client.ok());
  const v1::EvaluationSpec spec = BigJobSpec();
  auto job = (*client)->SubmitEvaluation(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  world->a->Signal(SIGSTOP);
  std::vector<std::string> causes;
  absl::StatusOr<v1::Evaluation> final_state;
  std::thread watcher([&] {
    final_state = (*client)->WatchEvaluation(
        job->id(), nullptr,
        [&](const absl::Status& cause, int) { causes.push_back(cause.ToString()); });
  });
  absl::SleepFor(absl::Seconds(3));
  world->a->Signal(SIGCONT);
  watcher.join();
  ASSERT_TRUE(final_state.ok()) << final_state.status();
  EXPECT_EQ(final_state->state(), v1::SUCCEEDED) << final_state->error();
  ASSERT_GE(causes.size(), 1u) << "keep-alive must have detected the stopped server";
  EXPECT_THAT(causes[0], HasSubstr("UNAVAILABLE"));
}

// Last: server A is killed (SIGKILL) with the job in flight and restarted on the same port;
// the CLI watch (through a proxy, so the test knows it is attached) reconnects, and the job,
// resumed from the server's state dir, finishes with every sample. The server is stopped
// (SIGSTOP) right after the submit so the job cannot finish before the crash.
TEST_F(ClientServerTest, WatchFollowsAJobAcrossAServerCrash) {
  auto client = MakeClient({world->a->target()});
  const int port = world->a->port();
  TcpProxy proxy(port);
  const v1::EvaluationSpec spec = BigJobSpec();
  auto job = client->SubmitEvaluation(spec);
  ASSERT_TRUE(job.ok()) << job.status();
  world->a->Signal(SIGSTOP);
  CommandResult r;
  std::thread watcher([&] {
    r = Cli({"eval", "watch", job->id(), "--target", proxy.target(), "--retry-backoff", "200ms",
             "--json"});
  });
  for (int i = 0; i < 500 && proxy.connections() == 0; ++i) absl::SleepFor(absl::Milliseconds(20));
  const bool attached = proxy.connections() > 0;
  absl::SleepFor(absl::Milliseconds(300));
  world->a->Kill();
  absl::SleepFor(absl::Seconds(1));
  const bool restarted = world->a->Start(port);
  watcher.join();
  ASSERT_TRUE(attached);
  ASSERT_TRUE(restarted) << world->a->log();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("reconnecting"));
  nlohmann::json j = Json(r);
  EXPECT_EQ(j["state"], "SUCCEEDED");
  EXPECT_EQ(std::stoll(j["result"]["overall"]["samples"].get<std::string>()) +
                std::stoll(j["result"]["overall"]["skipped"].get<std::string>()),
            kBigJobSamples);
  EXPECT_GE(proxy.connections(), 2);
}

}  // namespace
}  // namespace eqsim
