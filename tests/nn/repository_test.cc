// The model repository: config parsing / validation with exact messages, version listing and
// policy, loading a native version end to end (tokenizer, preprocessor, encoder, warm-up), and
// every load error a user can cause.
#include "model/repo/repository.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "model/data/fashion_mnist.h"
#include "model/nn/encoder_factory.h"
#include "model/nn/native_init.h"
#include "opencv2/imgproc.hpp"

namespace eqsim {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

const std::vector<std::string> kWords = {"a", "bag", "blue", "of", "photo", "red", "sneaker",
                                         "two"};
constexpr int kVocab = 4 + 8;

void WriteFile(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
}

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

const char kConfig[] = R"pb(name: "m"
backend: NATIVE
embed_dim: 32
tokenizer { kind: WORD vocab_file: "vocab.txt" }
native { image_width: 8 image_stages: 2 text_width: 32 text_layers: 1 text_heads: 2 }
device: CPU
)pb";

class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = (fs::temp_directory_path() /
             ("eqsim_repo_test_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                .string();
    fs::remove_all(repo_);
    fs::create_directories(repo_);
  }
  void TearDown() override { fs::remove_all(repo_); }

  // repo/<name>/config.pbtxt, vocab.txt, and version folders with seeded weights.
  config::ModelConfig MakeModel(const std::string& name, std::vector<int64_t> versions,
                                const std::string& text = kConfig) {
    std::string t = text;
    auto pos = t.find("name: \"m\"");
    if (pos != std::string::npos) t.replace(pos, 9, "name: \"" + name + "\"");
    WriteFile(fs::path(repo_) / name / "config.pbtxt", t);
    std::string vocab;
    for (const auto& w : kWords) vocab += w + "\n";
    WriteFile(fs::path(repo_) / name / "vocab.txt", vocab);
    auto cfg = ParseModelConfig(t, "test");
    EXPECT_TRUE(cfg.ok()) << cfg.status();
    for (int64_t v : versions) {
      absl::Status st = WriteInitialNativeWeights(
          *cfg, kVocab, 100 + v, (fs::path(repo_) / name / std::to_string(v)).string());
      EXPECT_TRUE(st.ok()) << st;
    }
    return *cfg;
  }

  std::string repo_;
};

TEST_F(RepositoryTest, ReadWriteRoundTrip) {
  auto cfg = ParseModelConfig(kConfig, "x");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->name(), "m");
  EXPECT_EQ(cfg->backend(), config::ModelConfig::NATIVE);
  EXPECT_EQ(cfg->native().text_heads(), 2);
  const std::string path = repo_ + "/sub/dir/config.pbtxt";
  ASSERT_TRUE(WriteModelConfig(*cfg, path).ok());
  auto back = ReadModelConfig(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*cfg, *back));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(RepositoryTest, ParseErrorsGiveFileLineAndColumn) {
  const std::string path = repo_ + "/bad.pbtxt";
  WriteFile(path, "name: \"m\"\nbackend: NATIVE\nembed_dim: \"abc\"\n");
  absl::Status st = ReadModelConfig(path).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), HasSubstr(path + ":3:12: Expected integer, got: \"abc\""));

  WriteFile(path, "name: \"m\"\n  embed_dims: 32\n");
  st = ReadModelConfig(path).status();
  EXPECT_THAT(Msg(st), HasSubstr(path + ":2:13: Message type \"eqsim.config.ModelConfig\" has no "
                                        "field named \"embed_dims\"."));

  WriteFile(path, "name: \"m\"\nbackend: TENSORFLOW\n");
  EXPECT_THAT(Msg(ReadModelConfig(path).status()),
              HasSubstr(path + ":3:1: Unknown enumeration value of \"TENSORFLOW\" for field "
                                  "\"backend\"."));

  WriteFile(path, "tokenizer {\n kind: WORD\n");
  EXPECT_THAT(Msg(ReadModelConfig(path).status()), HasSubstr(path + ":3:1:"));

  st = ReadModelConfig(repo_ + "/missing.pbtxt").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(st), HasSubstr("missing.pbtxt: cannot open"));
}

TEST_F(RepositoryTest, ValidationNamesTheField) {
  auto base = *ParseModelConfig(kConfig, "x");
  auto check = [&](auto mutate, const std::string& expected, const std::string& folder = "m") {
    config::ModelConfig c = base;
    mutate(c);
    absl::Status st = ValidateModelConfig(c, "m/config.pbtxt", folder);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << expected;
    EXPECT_THAT(Msg(st), HasSubstr(expected));
  };
  EXPECT_TRUE(ValidateModelConfig(base, "m/config.pbtxt", "m").ok());
  check([](auto& c) { c.clear_name(); }, "m/config.pbtxt: name is empty");
  check([](auto& c) {}, "m/config.pbtxt: name 'm' does not match its folder 'other'", "other");
  check([](auto& c) { c.set_name("a/b"); }, "name 'a/b' has the character '/'", "");
  check([](auto& c) { c.clear_backend(); }, "backend is not set (NATIVE or TORCHSCRIPT)");
  check([](auto& c) { c.set_embed_dim(0); }, "embed_dim must be in [1, 65536], got 0");
  check([](auto& c) { c.mutable_tokenizer()->clear_kind(); },
        "tokenizer.kind is not set (CLIP_BPE or WORD)");
  check([](auto& c) { c.mutable_tokenizer()->clear_vocab_file(); },
        "tokenizer.vocab_file is empty");
  check([](auto& c) { c.mutable_tokenizer()->set_context_length(-2); },
        "tokenizer.context_length must be 0 (default) or in [2, 4096], got -2");
  check([](auto& c) { c.mutable_native()->set_image_width(-1); },
        "native.image_width must be >= 0, got -1");
  check([](auto& c) { c.mutable_native()->set_text_heads(3); },
        "native.text_heads 3 does not divide native.text_width 32");
  check([](auto& c) { c.mutable_native()->set_embed_dim(64); },
        "native.embed_dim 64 differs from embed_dim 32");
  check([](auto& c) { c.mutable_image()->add_mean(0.5f); }, "image.mean");
  check([](auto& c) { c.mutable_batching()->set_max_batch_size(-1); },
        "batching.max_batch_size must be in [0, 65536]");
  check([](auto& c) { c.mutable_batching()->set_max_queue_delay_us(-5); },
        "batching.max_queue_delay_us must be in [0, 10000000]");
  check([](auto& c) { c.set_latest(2); c.add_versions(1); },
        "latest and versions are mutually exclusive");
  check([](auto& c) { c.add_versions(1); c.add_versions(0); }, "versions[1] must be > 0, got 0");
  check([](auto& c) { c.add_versions(3); c.add_versions(3); }, "versions[1] repeats version 3");
  check([](auto& c) {
          c.set_backend(config::ModelConfig::TORCHSCRIPT);
          c.mutable_torchscript()->set_file("../../etc/x.pt");
        },
        "torchscript.file '../../etc/x.pt' must be a relative path inside the version folder");
}

TEST_F(RepositoryTest, WithDefaultsFillsEveryDefault) {
  config::ModelConfig c = WithDefaults(*ParseModelConfig(
      "name: \"x\" backend: NATIVE embed_dim: 64 tokenizer { kind: WORD vocab_file: \"v\" }",
      "x"));
  EXPECT_EQ(c.image().recipe(), config::ImagePreprocess::NATIVE);
  EXPECT_EQ(c.image().size(), 64);
  EXPECT_EQ(c.tokenizer().context_length(), 16);
  EXPECT_EQ(c.native().image_width(), 32);
  EXPECT_EQ(c.native().image_pool_grid(), 2);
  EXPECT_EQ(c.native().text_layers(), 2);
  EXPECT_EQ(c.native().embed_dim(), 64);
  EXPECT_EQ(c.batching().max_batch_size(), 32);
  EXPECT_EQ(c.batching().max_queue_delay_us(), 2000);
  EXPECT_EQ(c.batching().max_queue_size(), 1024);
  EXPECT_EQ(c.latest(), 1);
  config::ModelConfig t = WithDefaults(*ParseModelConfig(
      "name: \"x\" backend: TORCHSCRIPT embed_dim: 512 image { recipe: CLIP } "
      "tokenizer { kind: CLIP_BPE vocab_file: \"v\" } versions: 3",
      "x"));
  EXPECT_EQ(t.torchscript().file(), "model.pt");
  EXPECT_EQ(t.image().size(), 224);
  EXPECT_EQ(t.tokenizer().context_length(), 77);
  EXPECT_EQ(t.latest(), 0);
}

TEST_F(RepositoryTest, ListsModelsAndVersions) {
  MakeModel("beta", {1});
  MakeModel("alpha", {});
  fs::create_directories(fs::path(repo_) / "no_config");
  fs::create_directories(fs::path(repo_) / ".hidden");
  WriteFile(fs::path(repo_) / ".hidden" / "config.pbtxt", kConfig);
  WriteFile(fs::path(repo_) / "file.txt", "x");
  auto names = ListModelNames(repo_);
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_THAT(*names, ElementsAre("alpha", "beta"));
  EXPECT_EQ(ListModelNames(repo_ + "/nope").status().code(), absl::StatusCode::kNotFound);

  const fs::path m = fs::path(repo_) / "alpha";
  for (const char* d : {"1", "2", "10", "01", "v3", "tmp", "-4", "0"}) fs::create_directories(m / d);
  WriteFile(m / "5", "a file, not a folder");
  auto versions = ListVersions(m.string());
  ASSERT_TRUE(versions.ok());
  EXPECT_THAT(*versions, ElementsAre(1, 2, 10));
  EXPECT_EQ(*NextVersion(m.string()), 11);
  EXPECT_EQ(*NextVersion((fs::path(repo_) / "new_model").string()), 1);
  EXPECT_EQ(ListVersions((fs::path(repo_) / "none").string()).status().code(),
            absl::StatusCode::kNotFound);

  config::ModelConfig c;
  EXPECT_THAT(SelectVersions(c, {1, 2, 10}), ElementsAre(10));
  c.set_latest(2);
  EXPECT_THAT(SelectVersions(c, {10, 1, 2}), ElementsAre(2, 10));
  c.set_latest(5);
  EXPECT_THAT(SelectVersions(c, {1, 2}), ElementsAre(1, 2));
  EXPECT_TRUE(SelectVersions(c, {}).empty());
  config::ModelConfig e;
  e.add_versions(7);
  e.add_versions(1);
  EXPECT_THAT(SelectVersions(e, {1, 2, 10}), ElementsAre(1));
  EXPECT_THAT(MissingVersions(e, {1, 2, 10}), ElementsAre(7));
}

TEST_F(RepositoryTest, LoadsANativeVersionEndToEnd) {
  config::ModelConfig cfg = MakeModel("m", {1, 2});
  auto loaded = LoadModelVersion(repo_, "m", 2);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const LoadedModel& m = **loaded;
  EXPECT_EQ(m.name, "m");
  EXPECT_EQ(m.version, 2);
  EXPECT_EQ(m.dir, (fs::path(repo_) / "m" / "2").string());
  EXPECT_EQ(m.config.native().image_pool_grid(), 2);  // defaults applied
  EXPECT_EQ(m.encoder->backend(), "native");
  EXPECT_EQ(m.encoder->device(), "cpu");
  EXPECT_EQ(m.encoder->dim(), 32);
  EXPECT_NEAR(m.encoder->logit_scale(), std::log(1 / 0.07), 1e-5);
  EXPECT_EQ(m.tokenizer->vocab_size(), kVocab);
  EXPECT_EQ(m.preprocessor->size(), 64);

  // Real pixels through the model's own preprocessor and tokenizer.
  auto data = LoadFashionMnist(FashionMnistSplit::kTest);
  ASSERT_TRUE(data.ok()) << data.status();
  std::vector<ImageTensor> imgs;
  for (int i = 0; i < 3; ++i) {
    cv::Mat gray(28, 28, CV_8UC1, const_cast<uint8_t*>(data->image(i)));
    cv::Mat rgb;
    cv::cvtColor(gray, rgb, cv::COLOR_GRAY2RGB);
    imgs.push_back(m.preprocessor->FromRgb(rgb));
  }
  ImageBatch batch = StackImages({&imgs[0], &imgs[1], &imgs[2]});
  auto e = m.encoder->EncodeImages(batch);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->rows, 3);
  EXPECT_EQ(e->cols, 32);
  auto ids = m.tokenizer->EncodeBatch({"two red bags", "a blue sneaker"});
  ASSERT_TRUE(ids.ok()) << ids.status();
  auto t = m.encoder->EncodeTexts(*ids);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->rows, 2);

  // Versions 1 and 2 have different weights (different seeds).
  auto v1 = LoadModelVersion(repo_, "m", 1);
  ASSERT_TRUE(v1.ok()) << v1.status();
  auto e1 = (*v1)->encoder->EncodeImages(batch);
  ASSERT_TRUE(e1.ok());
  EXPECT_NE(e1->data, e->data);

  // Concurrent encodes give the same answers as sequential ones.
  std::vector<std::thread> threads;
  std::vector<Matrix> results(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      auto r = i % 2 ? m.encoder->EncodeTexts(*ids) : m.encoder->EncodeImages(batch);
      if (r.ok()) results[i] = *r;
    });
  }
  for (auto& th : threads) th.join();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(results[i].data, (i % 2 ? t->data : e->data)) << i;

  // Empty batches are fine; bad batches are precise errors.
  auto empty = m.encoder->EncodeTexts(TokenBatch{});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->rows, 0);
  TokenBatch bad = *ids;
  bad.ids[ids->length + 2] = 9999;
  auto r = m.encoder->EncodeTexts(bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(r.status()),
              HasSubstr("text 1: token id 9999 at position 2 is outside the vocabulary [0, 12)"));
  TokenBatch too_long;
  too_long.n = 1;
  too_long.length = 40;
  too_long.ids.assign(40, 2);
  EXPECT_THAT(Msg(m.encoder->EncodeTexts(too_long).status()),
              HasSubstr("token batch has length 40, over the model's context length 16"));
  ImageBatch short_batch = batch;
  short_batch.data.resize(10);
  EXPECT_THAT(Msg(m.encoder->EncodeImages(short_batch).status()),
              HasSubstr("image batch holds 10 floats, expected n*3*H*W"));
}

TEST_F(RepositoryTest, PerVersionConfigOverrides) {
  MakeModel("m", {1});
  // Version 2 has its own, wider architecture and embed_dim.
  std::string v2 = kConfig;
  v2.replace(v2.find("embed_dim: 32"), 13, "embed_dim: 48");
  WriteFile(fs::path(repo_) / "m" / "2" / "config.pbtxt", v2);
  auto cfg2 = ParseModelConfig(v2, "v2");
  ASSERT_TRUE(WriteInitialNativeWeights(*cfg2, kVocab, 3, (fs::path(repo_) / "m" / "2").string()).ok());
  auto a = LoadModelVersion(repo_, "m", 1);
  auto b = LoadModelVersion(repo_, "m", 2);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*a)->encoder->dim(), 32);
  EXPECT_EQ((*b)->encoder->dim(), 48);
  auto rc = ReadVersionConfig((fs::path(repo_) / "m").string(), "m", 2);
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(rc->embed_dim(), 48);
}

TEST_F(RepositoryTest, LoadErrorsAreExact) {
  MakeModel("m", {1});
  const std::string mdir = (fs::path(repo_) / "m").string();

  auto st = LoadModelVersion(repo_, "zzz", 1).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Msg(st), "model 'zzz' not found in repository " + repo_);

  st = LoadModelVersion(repo_ + "/nope", "m", 1).status();
  EXPECT_THAT(Msg(st), HasSubstr("model repository " + repo_ + "/nope is not a directory"));

  st = LoadModelVersion(repo_, "../m", 1).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);

  st = LoadModelVersion(repo_, "m", 9).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Msg(st), "model m version 9: version folder " + mdir + "/9 does not exist");

  fs::create_directories(mdir + "/2");
  st = LoadModelVersion(repo_, "m", 2).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Msg(st), "model m version 2: version folder " + mdir + "/2 has no weights.pt");

  WriteFile(mdir + "/3/weights.pt", "garbage bytes, not a torch archive");
  st = LoadModelVersion(repo_, "m", 3).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), HasSubstr("model m version 3: " + mdir +
                                 "/3/weights.pt: not a readable torch archive"));

  // Missing vocabulary file.
  fs::remove(mdir + "/vocab.txt");
  st = LoadModelVersion(repo_, "m", 1).status();
  EXPECT_THAT(Msg(st), HasSubstr("model m version 1: tokenizer"));
  EXPECT_THAT(Msg(st), HasSubstr("vocab.txt"));
  MakeModel("m", {});

  // The config's embed_dim no longer matches the weights.
  std::string wrong = kConfig;
  wrong.replace(wrong.find("embed_dim: 32"), 13, "embed_dim: 16");
  WriteFile(mdir + "/config.pbtxt", wrong);
  st = LoadModelVersion(repo_, "m", 1).status();
  EXPECT_THAT(Msg(st), HasSubstr("model m version 1: weights.pt: parameter 'image_proj.weight' "
                                 "has shape [32, 64] in the file but [16, 64] in the model "
                                 "built from config.pbtxt"));

  // Broken configs.
  WriteFile(mdir + "/config.pbtxt", "name: \"m\"\nembed_dim: 32\n");
  st = LoadModelVersion(repo_, "m", 1).status();
  EXPECT_EQ(Msg(st), "model m version 1: " + mdir +
                         "/config.pbtxt: backend is not set (NATIVE or TORCHSCRIPT)");
  WriteFile(mdir + "/config.pbtxt", "backend: NATIVE\nembed_dim: 32\n");
  EXPECT_EQ(Msg(LoadModelVersion(repo_, "m", 1).status()),
            "model m version 1: " + mdir + "/config.pbtxt: name is empty");
  WriteFile(mdir + "/config.pbtxt", "name: \"other\"\n");
  EXPECT_THAT(Msg(LoadModelVersion(repo_, "m", 1).status()),
              HasSubstr("name 'other' does not match its folder 'm'"));
  WriteFile(mdir + "/config.pbtxt", "name: \"m\"\nbogus_field: 1\n");
  EXPECT_THAT(Msg(LoadModelVersion(repo_, "m", 1).status()),
              HasSubstr(mdir + "/config.pbtxt:2:12: Message type \"eqsim.config.ModelConfig\" has "
                               "no field named \"bogus_field\"."));
  fs::remove(mdir + "/config.pbtxt");
  EXPECT_EQ(Msg(LoadModelVersion(repo_, "m", 1).status()),
            "model folder " + mdir + " has no config.pbtxt");
}

TEST_F(RepositoryTest, CudaRequestOnACpuBuildIsAnError) {
  if (TorchHasCuda()) GTEST_SKIP() << "this LibTorch has CUDA";
  std::string text = kConfig;
  text.replace(text.find("device: CPU"), 11, "device: CUDA");
  MakeModel("m", {1}, text);
  auto st = LoadModelVersion(repo_, "m", 1).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(st), HasSubstr("model m version 1: device CUDA requested but LibTorch has no CUDA"));
  // AUTO falls back to the CPU; a load option can override the config's device.
  LoadOptions opts;
  opts.override_device = true;
  opts.device_override = config::ModelConfig::CPU;
  auto ok = LoadModelVersion(repo_, "m", 1, opts);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->encoder->device(), "cpu");
}

}  // namespace
}  // namespace eqsim
