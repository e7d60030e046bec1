// End-to-end training runs at tiny size: the loss goes down, a loadable version is published
// with its model card, and a resumed run reproduces an uninterrupted one exactly.
#include "model/train/trainer.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bench/generator.h"
#include "model/repo/repository.h"
#include "nlohmann/json.hpp"
#include "opencv2/imgcodecs.hpp"

namespace eqsim {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using json = nlohmann::json;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("eqsim_train_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A tiny model that trains in seconds.
  TrainOptions Tiny() const {
    TrainOptions o;
    o.embed_dim = 32;
    o.image_width = 8;
    o.image_stages = 2;
    o.image_size = 32;
    o.text_width = 32;
    o.text_layers = 1;
    o.text_heads = 2;
    o.batch_size = 32;
    o.steps = 60;
    o.lr = 3e-3;
    o.warmup_steps = 5;
    o.threads = 2;
    o.log_every = 10;
    o.heldout_scenes = 100;
    o.progress = false;
    o.data.max_items = 2;
    return o;
  }
  std::string Path(const std::string& s) const { return (dir_ / s).string(); }
  fs::path dir_;
};

json ReadJson(const std::string& path) {
  std::ifstream f(path);
  return json::parse(f, nullptr, false);
}

TEST_F(TrainerTest, LossDecreasesAndAVersionIsPublished) {
  TrainOptions o = Tiny();
  o.repository = Path("repo");
  o.model_name = "tiny";
  o.metrics_log = Path("metrics.jsonl");
  o.command_line = "eqsim-train --steps 60";
  o.flags = {{"steps", "60"}};
  auto r = Train(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->steps_done, 60);
  EXPECT_LT(r->loss, 0.8 * r->first_loss) << "first " << r->first_loss << " last " << r->loss;
  EXPECT_EQ(r->heldout.n, 100);
  EXPECT_GT(r->heldout.i2t_r5, 0.05);  // chance is 5%: even 60 tiny steps beat it
  EXPECT_EQ(r->version, 1);
  EXPECT_EQ(r->version_dir, Path("repo/tiny/1"));
  EXPECT_GT(r->parameters, 1000);

  // The metrics log: 6 train lines, then the final one.
  std::ifstream ml(o.metrics_log);
  std::string line;
  int train_lines = 0;
  json last;
  while (std::getline(ml, line)) {
    last = json::parse(line);
    train_lines += last["type"] == "train";
  }
  EXPECT_EQ(train_lines, 6);
  EXPECT_EQ(last["type"], "final");

  // Version folder: loadable by the repository (what the server does), with its card.
  EXPECT_TRUE(fs::exists(Path("repo/tiny/config.pbtxt")));
  EXPECT_TRUE(fs::exists(Path("repo/tiny/1/weights.pt")));
  EXPECT_TRUE(fs::exists(Path("repo/tiny/1/vocab.txt")));
  auto loaded = LoadModelVersion(Path("repo"), "tiny", 1);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->config.embed_dim(), 32);
  auto ids = (*loaded)->tokenizer->EncodeBatch({"a red bag", "two blue sneakers and a white top"});
  ASSERT_TRUE(ids.ok()) << ids.status();
  auto emb = (*loaded)->encoder->EncodeTexts(*ids);
  ASSERT_TRUE(emb.ok()) << emb.status();
  EXPECT_EQ(emb->rows, 2);
  EXPECT_EQ(emb->cols, 32);

  json card = ReadJson(Path("repo/tiny/1/model_card.json"));
  ASSERT_TRUE(card.is_object());
  EXPECT_EQ(card["model"], "tiny");
  EXPECT_EQ(card["version"], 1);
  EXPECT_EQ(card["command_line"], "eqsim-train --steps 60");
  EXPECT_EQ(card["flags"]["steps"], "60");
  EXPECT_EQ(card["data"]["source"], "fashion-mnist");
  EXPECT_EQ(card["options"]["optim"]["batch_size"], 32);
  EXPECT_EQ(card["architecture"]["embed_dim"], 32);
  EXPECT_EQ(card["training"]["steps"], 60);
  EXPECT_GT(card["training"]["steps_per_s"].get<double>(), 0);
  EXPECT_EQ(card["loss"]["eqsim_enabled"], false);
  EXPECT_DOUBLE_EQ(card["final_metrics"]["heldout"]["i2t_r1"].get<double>(), r->heldout.i2t_r1);
  EXPECT_EQ(card["params_fingerprint"], r->params_fingerprint);

  // A second run of the same model becomes version 2; no temp folders are left behind.
  o.steps = 5;
  o.metrics_log.clear();
  auto r2 = Train(o);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->version, 2);
  for (const auto& e : fs::directory_iterator(Path("repo/tiny"))) {
    EXPECT_FALSE(absl::StartsWith(e.path().filename().string(), ".tmp")) << e.path();
  }
  // A different architecture cannot share the model's config.pbtxt.
  o.embed_dim = 16;
  auto r3 = Train(o);
  ASSERT_FALSE(r3.ok());
  EXPECT_THAT(r3.status().message(), HasSubstr("config.pbtxt exists and differs"));
  EXPECT_THAT(r3.status().message(), HasSubstr("embed_dim"));
}

TEST_F(TrainerTest, EqSimTermsAreTrainedAndReported) {
  TrainOptions o = Tiny();
  o.steps = 20;
  o.eqsim = EqSimOptions::Released();
  o.data.twin_prob = 0.5;
  auto r = Train(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->loss, r->itc);  // the regulariser adds to the contrastive loss
  EXPECT_GE(r->eqsim_text + r->eqsim_image + r->eqsim_v1, 0.0);
  EXPECT_NEAR(r->loss, r->itc + r->eqsim_text + r->eqsim_image + r->eqsim_v1 + r->eqsim_pos_reg,
              1e-4);
}

TEST_F(TrainerTest, ResumeReproducesAnUninterruptedRun) {
  for (bool eqsim_on : {false, true}) {
    SCOPED_TRACE(eqsim_on ? "eqsim" : "contrastive");
    TrainOptions o = Tiny();
    o.threads = 1;
    o.steps = 12;
    o.batch_size = 16;
    o.heldout_scenes = 0;
    o.data.twin_prob = eqsim_on ? 0.5 : 0.0;
    if (eqsim_on) o.eqsim = EqSimOptions::Released();
    auto full = Train(o);
    ASSERT_TRUE(full.ok()) << full.status();

    const std::string ck = Path(eqsim_on ? "ck_eq" : "ck");
    o.checkpoint_dir = ck;
    o.checkpoint_every = 5;
    o.stop_after = 7;  // "interrupted" after step 7: the newest checkpoint is step 7
    auto part = Train(o);
    ASSERT_TRUE(part.ok()) << part.status();
    EXPECT_TRUE(part->stopped_early);
    EXPECT_NE(part->params_fingerprint, full->params_fingerprint);
    EXPECT_TRUE(fs::exists(ck + "/step-000000005/state.json"));
    EXPECT_TRUE(fs::exists(ck + "/step-000000007/weights.pt"));

    o.stop_after = 0;
    o.resume = true;
    auto resumed = Train(o);
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    EXPECT_EQ(resumed->resumed_from, 7);
    EXPECT_EQ(resumed->steps_this_run, 5);
    EXPECT_EQ(resumed->params_fingerprint, full->params_fingerprint);

    // Incompatible resumption is refused with the field named.
    o.batch_size = 8;
    o.steps = 20;
    auto bad = Train(o);
    ASSERT_FALSE(bad.ok());
    EXPECT_THAT(bad.status().message(), HasSubstr("batch_size"));
  }
}

TEST_F(TrainerTest, ManifestRunCountsBadImagesWithoutFailing) {
  fs::create_directories(dir_ / "img");
  std::ofstream m(Path("m.jsonl"));
  const char* colours[] = {"red", "green", "blue", "white"};
  const cv::Scalar bgr[] = {{0, 0, 255}, {0, 255, 0}, {255, 0, 0}, {255, 255, 255}};
  for (int i = 0; i < 24; ++i) {
    cv::Mat img(40, 40, CV_8UC3, cv::Scalar(0, 0, 0));
    const int x = (i / 4) % 2 == 0 ? 2 : 22;
    img(cv::Rect(x, 10, 16, 16)).setTo(bgr[i % 4]);
    const std::string name = "img/" + std::to_string(i) + ".png";
    ASSERT_TRUE(cv::imwrite(Path(name), img));
    m << "{\"image\": \"" << name << "\", \"caption\": \"a " << colours[i % 4] << " square on the "
      << (x == 2 ? "left" : "right") << "\"}\n";
  }
  std::ofstream(Path("img/bad.png")) << "not an image";
  m << "{\"image\": \"img/bad.png\", \"caption\": \"broken\"}\n";
  m.close();
  TrainOptions o = Tiny();
  o.data = DataSourceOptions();
  o.data.spec = "manifest:" + Path("m.jsonl");
  o.batch_size = 8;
  o.steps = 10;
  o.repository = Path("repo");
  o.model_name = "squares";
  auto r = Train(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->bad_samples, 1);
  json card = ReadJson(Path("repo/squares/1/model_card.json"));
  EXPECT_EQ(card["data"]["bad_samples"], 1);
  EXPECT_THAT(card["data"]["bad_sample_list"][0]["where"].get<std::string>(), HasSubstr("img/bad.png"));
  // The vocabulary comes from the manifest's captions.
  std::ifstream v(Path("repo/squares/1/vocab.txt"));
  std::stringstream ss;
  ss << v.rdbuf();
  EXPECT_THAT(ss.str(), HasSubstr("square"));
  EXPECT_THAT(ss.str(), HasSubstr("left"));

  o.data.max_bad_samples = 0;
  o.model_name = "squares2";
  auto r2 = Train(o);
  ASSERT_FALSE(r2.ok());
  EXPECT_THAT(r2.status().message(), HasSubstr("img/bad.png"));
}

TEST_F(TrainerTest, EvaluatesAMinimalChangeBenchmark) {
  GeneratorOptions g;
  g.out_dir = Path("bench");
  g.per_subset = 8;
  auto gen = GenerateBenchmark(g);
  ASSERT_TRUE(gen.ok()) << gen.status();
  TrainOptions o = Tiny();
  o.steps = 10;
  o.eval_every = 5;
  o.eval_benchmark = gen->winoground_jsonl;
  o.eval_format = "winoground";
  o.eval_image_root = Path("bench");
  o.metrics_log = Path("m.jsonl");
  auto r = Train(o);
  ASSERT_TRUE(r.ok()) << r.status();
  json b = json::parse(r->benchmark_json, nullptr, false);
  ASSERT_TRUE(b.is_object()) << r->benchmark_json;
  EXPECT_EQ(b["overall"]["samples"], 32);
  const double group = b["overall"]["group_score"].get<double>();
  EXPECT_GE(group, 0.0);
  EXPECT_LE(group, 1.0);
  EXPECT_EQ(b["subsets"].size(), 4u);
  // The periodic evaluation at step 5 is in the metrics log.
  std::ifstream ml(o.metrics_log);
  std::string line;
  bool seen = false;
  while (std::getline(ml, line)) {
    json j = json::parse(line);
    if (j["type"] == "eval" && j["step"] == 5) seen = j.contains("benchmark");
  }
  EXPECT_TRUE(seen);
}

TEST_F(TrainerTest, InvalidOptionsAreRejected) {
  TrainOptions o = Tiny();
  o.steps = 0;
  EXPECT_THAT(Train(o).status().message(), HasSubstr("--steps"));
  o = Tiny();
  o.schedule = "exp";
  EXPECT_THAT(Train(o).status().message(), HasSubstr("--schedule"));
  o = Tiny();
  o.resume = true;
  EXPECT_THAT(Train(o).status().message(), HasSubstr("--checkpoint-dir"));
  o = Tiny();
  o.text_heads = 3;  // does not divide text_width 32
  EXPECT_FALSE(Train(o).ok());
  o = Tiny();
  o.repository = Path("r");
  EXPECT_THAT(Train(o).status().message(), HasSubstr("--model-name"));
}

// The command-line program: --help, a bad flag value, and a short run with --json.
std::string RunShell(const std::string& cmd, int* code) {
  std::string out;
  FILE* p = popen(("(" + cmd + ") 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  int st = pclose(p);
  *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

TEST_F(TrainerTest, CommandLine) {
  const char* bin_dir = std::getenv("EQSIM_BIN_DIR");
  ASSERT_NE(bin_dir, nullptr);
  const std::string bin = std::string(bin_dir) + "/eqsim-train";
  int code = -1;
  std::string out = RunShell(bin + " --help", &code);
  EXPECT_THAT(out, HasSubstr("--twin_prob"));
  EXPECT_THAT(out, HasSubstr("--eqsim_sample_num"));
  out = RunShell(bin + " --eqsim --eqsim_weight=abc", &code);
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("--eqsim-weight=abc"));
  out = RunShell(bin + " --steps=0", &code);
  EXPECT_EQ(code, 2);
  EXPECT_THAT(out, HasSubstr("--steps must be > 0"));

  const std::string json_path = Path("out.json");
  RunShell(bin + " --steps=3 --batch_size=8 --embed_dim=16 --image_width=8 --image_stages=2 "
            "--text-width=16 --text-layers=1 --text_heads=2 --heldout-scenes=20 --threads=1 "
            "--repository=" + Path("repo") + " --model-name=cli --json > " + json_path,
      &code);
  EXPECT_EQ(code, 0);
  json j = ReadJson(json_path);
  ASSERT_TRUE(j.is_object()) << "stdout is not one JSON object";
  EXPECT_EQ(j["steps"], 3);
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["heldout"]["n"], 20);
  json card = ReadJson(Path("repo/cli/1/model_card.json"));
  EXPECT_THAT(card["command_line"].get<std::string>(), HasSubstr("eqsim-train --steps=3"));
  EXPECT_EQ(card["flags"]["embed_dim"], "16");
  EXPECT_EQ(card["flags"]["twin_prob"], "0");
}

}  // namespace
}  // namespace eqsim
