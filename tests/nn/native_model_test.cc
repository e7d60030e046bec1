// The native dual encoder: shapes, padding mask, EOS pooling, save/load round trip, weight
// file errors, and that it learns on real Fashion-MNIST images.
#include "model/nn/native_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/data/fashion_mnist.h"
#include "model/nn/losses.h"

namespace eqsim {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  fs::path p = fs::temp_directory_path() /
               ("eqsim_nn_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

config::ModelConfig SmallConfig() {
  config::ModelConfig cfg;
  cfg.set_name("m");
  cfg.set_backend(config::ModelConfig::NATIVE);
  cfg.set_embed_dim(32);
  cfg.mutable_tokenizer()->set_kind(config::TokenizerConfig::WORD);
  auto* n = cfg.mutable_native();
  n->set_image_width(8);
  n->set_image_stages(2);
  n->set_text_width(32);
  n->set_text_layers(1);
  n->set_text_heads(2);
  return cfg;
}

TEST(NativeModelOptions, DefaultsAndErrors) {
  config::ModelConfig cfg;
  cfg.set_embed_dim(128);
  auto o = NativeModelOptions::FromConfig(cfg, 100);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->image_width, 32);
  EXPECT_EQ(o->image_stages, 3);
  EXPECT_EQ(o->image_blocks, 1);
  EXPECT_EQ(o->image_pool_grid, 2);
  EXPECT_EQ(o->image_stem_stride, 2);
  EXPECT_EQ(o->text_width, 128);
  EXPECT_EQ(o->text_layers, 2);
  EXPECT_EQ(o->text_heads, 4);
  EXPECT_EQ(o->vocab_size, 100);
  EXPECT_EQ(o->context_length, 16);
  EXPECT_NEAR(o->init_logit_scale, std::log(1 / 0.07), 1e-6);

  cfg.mutable_native()->set_text_heads(3);
  EXPECT_THAT(std::string(NativeModelOptions::FromConfig(cfg, 100).status().message()),
              HasSubstr("native.text_heads 3 does not divide native.text_width 128"));
  cfg.mutable_native()->set_text_heads(0);
  cfg.mutable_native()->set_vocab_size(50);
  EXPECT_THAT(std::string(NativeModelOptions::FromConfig(cfg, 100).status().message()),
              HasSubstr("native.vocab_size 50 is smaller than the tokenizer's vocabulary (100"));
  cfg.mutable_native()->set_vocab_size(0);
  EXPECT_THAT(std::string(NativeModelOptions::FromConfig(cfg, 0).status().message()),
              HasSubstr("native.vocab_size"));
  cfg.mutable_native()->set_image_stages(-1);
  EXPECT_THAT(std::string(NativeModelOptions::FromConfig(cfg, 10).status().message()),
              HasSubstr("native.image_stages must be in [1, 8], got -1"));
}

TEST(NativeModel, ShapesAndParameterCountAtDefaults) {
  config::ModelConfig cfg;
  cfg.set_embed_dim(128);
  auto model = BuildNativeModel(cfg, 64, 1);
  ASSERT_TRUE(model.ok()) << model.status();
  NativeDualEncoder m = *model;
  const int64_t params = m->parameter_count();
  EXPECT_GT(params, 500'000);
  EXPECT_LT(params, 3'000'000);
  torch::NoGradGuard no_grad;
  EXPECT_EQ(m->encode_image(torch::randn({3, 3, 64, 64})).sizes(), (std::vector<int64_t>{3, 128}));
  // Other sizes work too (adaptive pooling).
  EXPECT_EQ(m->encode_image(torch::randn({2, 3, 40, 56})).sizes(), (std::vector<int64_t>{2, 128}));
  torch::Tensor ids = torch::tensor({2, 10, 11, 3, 0, 0}, torch::kLong).view({1, 6});
  EXPECT_EQ(m->encode_text(ids).sizes(), (std::vector<int64_t>{1, 128}));
  EXPECT_NEAR(m->logit_scale().item<float>(), std::log(1 / 0.07), 1e-5);
  torch::Tensor s = m->score_matrix(torch::randn({4, 128}), torch::randn({5, 128}));
  EXPECT_EQ(s.sizes(), (std::vector<int64_t>{4, 5}));
  EXPECT_LE(s.abs().max().item<float>(), std::exp(std::log(1 / 0.07)) + 1e-3);
}

TEST(NativeModel, PaddingIsMaskedAndEosIsTheLastToken) {
  auto model = BuildNativeModel(SmallConfig(), 30, 2);
  ASSERT_TRUE(model.ok()) << model.status();
  NativeDualEncoder m = *model;
  torch::NoGradGuard no_grad;
  torch::Tensor a = torch::tensor({2, 7, 8, 9, 3}, torch::kLong).view({1, 5});
  torch::Tensor b = torch::tensor({2, 7, 8, 9, 3, 0, 0, 0, 0, 0}, torch::kLong).view({1, 10});
  torch::Tensor ea = m->encode_text(a), eb = m->encode_text(b);
  EXPECT_LT((ea - eb).abs().max().item<float>(), 1e-5) << "padding changed the embedding";
  // Batched with a longer caption gives the same row.
  torch::Tensor both = torch::tensor({2, 7, 8, 9, 3, 0, 0, 0, 2, 7, 8, 9, 10, 11, 12, 3},
                                     torch::kLong).view({2, 8});
  torch::Tensor e2 = m->encode_text(both);
  EXPECT_LT((e2[0] - ea[0]).abs().max().item<float>(), 1e-5);
  // Word order matters (positions), and a different word changes the embedding.
  torch::Tensor swapped = torch::tensor({2, 8, 7, 9, 3}, torch::kLong).view({1, 5});
  EXPECT_GT((m->encode_text(swapped) - ea).abs().max().item<float>(), 1e-4);
  // An all-padding row gives finite values, not NaN.
  torch::Tensor empty = torch::zeros({1, 5}, torch::kLong);
  EXPECT_TRUE(torch::isfinite(m->encode_text(empty)).all().item<bool>());
  // Longer than the context length is refused.
  EXPECT_THROW(m->encode_text(torch::ones({1, 17}, torch::kLong)), c10::Error);
}

TEST(NativeModel, ImagePositionMattersWithGridPooling) {
  auto model = BuildNativeModel(SmallConfig(), 30, 3);
  ASSERT_TRUE(model.ok());
  NativeDualEncoder m = *model;
  torch::NoGradGuard no_grad;
  // The same patch in the top-left vs the bottom-right quadrant.
  torch::Tensor patch = torch::rand({3, 32, 32});
  torch::Tensor x = -torch::ones({2, 3, 64, 64});
  x[0].slice(1, 0, 32).slice(2, 0, 32).copy_(patch);
  x[1].slice(1, 32, 64).slice(2, 32, 64).copy_(patch);
  torch::Tensor e = m->encode_image(x);
  EXPECT_GT((e[0] - e[1]).abs().max().item<float>(), 1e-3);
}

TEST(NativeWeights, SaveLoadRoundTripIsExact) {
  const std::string dir = TempDir("roundtrip");
  const std::string path = dir + "/weights.pt";
  auto a = BuildNativeModel(SmallConfig(), 40, 11);
  auto b = BuildNativeModel(SmallConfig(), 40, 12);
  ASSERT_TRUE(a.ok() && b.ok());
  // Make the model non-trivial (zero-initialised norms) with one optimiser step.
  {
    torch::optim::Adam opt((*a)->parameters(), 0.01);
    torch::Tensor S = (*a)->score_matrix((*a)->encode_image(torch::randn({4, 3, 32, 32})),
                                         (*a)->encode_text(torch::randint(4, 40, {4, 6})));
    ContrastiveLoss(S).backward();
    opt.step();
  }
  ASSERT_TRUE(SaveNativeWeights(**a, path).ok());
  torch::NoGradGuard no_grad;
  torch::Tensor img = torch::randn({3, 3, 64, 64});
  torch::Tensor ids = torch::tensor({2, 5, 6, 3, 0, 2, 9, 3, 0, 0}, torch::kLong).view({2, 5});
  EXPECT_FALSE(torch::equal((*a)->encode_image(img), (*b)->encode_image(img)));
  absl::Status st = LoadNativeWeights(**b, path);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(torch::equal((*a)->encode_image(img), (*b)->encode_image(img)));
  EXPECT_TRUE(torch::equal((*a)->encode_text(ids), (*b)->encode_text(ids)));
  EXPECT_EQ((*a)->logit_scale().item<float>(), (*b)->logit_scale().item<float>());
  // The same seed builds the same model, byte for byte.
  auto c = BuildNativeModel(SmallConfig(), 40, 12);
  const std::string p2 = dir + "/b.pt", p3 = dir + "/c.pt";
  auto b2 = BuildNativeModel(SmallConfig(), 40, 12);
  ASSERT_TRUE(SaveNativeWeights(**b2, p2).ok());
  ASSERT_TRUE(SaveNativeWeights(**c, p3).ok());
  std::ifstream f2(p2, std::ios::binary), f3(p3, std::ios::binary);
  std::string s2((std::istreambuf_iterator<char>(f2)), {}), s3((std::istreambuf_iterator<char>(f3)), {});
  EXPECT_EQ(s2, s3);
  fs::remove_all(dir);
}

TEST(NativeWeights, MismatchErrorsNameTheParameter) {
  const std::string dir = TempDir("mismatch");
  const std::string path = dir + "/weights.pt";
  auto a = BuildNativeModel(SmallConfig(), 40, 1);
  ASSERT_TRUE(SaveNativeWeights(**a, path).ok());

  config::ModelConfig deeper = SmallConfig();
  deeper.mutable_native()->set_text_layers(2);
  auto d = BuildNativeModel(deeper, 40, 1);
  absl::Status st = LoadNativeWeights(**d, path);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("weights.pt: missing parameter 'text_layers.1.ln1.weight'"));

  config::ModelConfig wider = SmallConfig();
  wider.set_embed_dim(16);
  auto w = BuildNativeModel(wider, 40, 1);
  st = LoadNativeWeights(**w, path);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("parameter 'image_proj.weight' has shape [32, 64] in the file but "
                        "[16, 64] in the model built from config.pbtxt"));

  config::ModelConfig shallower = SmallConfig();
  shallower.mutable_native()->set_image_stages(1);
  auto s = BuildNativeModel(shallower, 40, 1);
  st = LoadNativeWeights(**s, path);
  EXPECT_THAT(std::string(st.message()), HasSubstr("weights.pt: unexpected parameters 'stages.1.conv1.weight', "
                                                 "'stages.1.norm1.weight'"));

  // Same shapes, different architecture: caught through the saved "arch" record.
  config::ModelConfig heads = SmallConfig();
  heads.mutable_native()->set_text_heads(4);
  auto h = BuildNativeModel(heads, 40, 1);
  EXPECT_THAT(std::string(LoadNativeWeights(**h, path).message()),
              HasSubstr("weights.pt was saved with native.text_heads 2 but config.pbtxt builds 4"));
  config::ModelConfig stride = SmallConfig();
  stride.mutable_native()->set_image_stem_stride(1);
  auto sr = BuildNativeModel(stride, 40, 1);
  EXPECT_THAT(std::string(LoadNativeWeights(**sr, path).message()),
              HasSubstr("weights.pt was saved with native.image_stem_stride 2 but config.pbtxt "
                        "builds 1"));

  // Garbage, empty and missing files.
  { std::ofstream(dir + "/junk.pt") << "definitely not a zip archive"; }
  st = LoadNativeWeights(**a, dir + "/junk.pt");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("junk.pt: not a readable torch archive"));
  { std::ofstream(dir + "/empty.pt"); }
  EXPECT_THAT(std::string(LoadNativeWeights(**a, dir + "/empty.pt").message()),
              HasSubstr("empty.pt: file is empty"));
  EXPECT_EQ(LoadNativeWeights(**a, dir + "/none.pt").code(), absl::StatusCode::kNotFound);

  // A torch archive that is not ours (a bare tensor).
  {
    std::vector<char> bytes = torch::pickle_save(torch::ones({2}));
    std::ofstream(dir + "/tensor.pt", std::ios::binary).write(bytes.data(), bytes.size());
  }
  EXPECT_THAT(std::string(LoadNativeWeights(**a, dir + "/tensor.pt").message()),
              HasSubstr("not an eqsim native weights file"));

  // Non-finite values are refused, and the model is left untouched.
  {
    torch::NoGradGuard g;
    auto bad = BuildNativeModel(SmallConfig(), 40, 1);
    (*bad)->named_parameters()["text_proj.weight"].fill_(NAN);
    ASSERT_TRUE(SaveNativeWeights(**bad, dir + "/nan.pt").ok());
  }
  torch::Tensor before = (*a)->named_parameters()["image_proj.weight"].clone();
  st = LoadNativeWeights(**a, dir + "/nan.pt");
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("parameter 'text_proj.weight' holds NaN or infinite values"));
  EXPECT_TRUE(torch::equal(before, (*a)->named_parameters()["image_proj.weight"]));
  fs::remove_all(dir);
}

// A few optimiser steps on real Fashion-MNIST images with their class names as one-word
// captions must lower the contrastive loss and align images with their class.
TEST(NativeModel, LearnsFashionMnistClassCaptions) {
  auto data = LoadFashionMnist(FashionMnistSplit::kTest);
  ASSERT_TRUE(data.ok()) << data.status();
  // One intra-op thread: OpenMP's spinning threads crawl on an oversubscribed CPU.
  at::set_num_threads(1);
  config::ModelConfig cfg = SmallConfig();
  auto model = BuildNativeModel(cfg, 20, 5);
  ASSERT_TRUE(model.ok());
  NativeDualEncoder m = *model;
  const int B = 40;  // 4 images of each class
  torch::Tensor img = torch::empty({B, 3, 28, 28});
  torch::Tensor ids = torch::zeros({B, 3}, torch::kLong);
  std::vector<int> per_class(10, 0);
  int filled = 0;
  for (int64_t i = 0; i < data->count && filled < B; ++i) {
    const int label = data->labels[i];
    if (per_class[label] == 4) continue;
    per_class[label]++;
    torch::Tensor px = torch::from_blob(const_cast<uint8_t*>(data->image(i)), {28, 28},
                                        torch::kUInt8).to(torch::kFloat) / 127.5 - 1.0;
    img[filled].copy_(px.unsqueeze(0).expand({3, 28, 28}));
    ids[filled][0] = 2;
    ids[filled][1] = 4 + label;
    ids[filled][2] = 3;
    ++filled;
  }
  ASSERT_EQ(filled, B);
  torch::optim::Adam opt(m->parameters(), 3e-3);
  float first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    opt.zero_grad();
    torch::Tensor S = m->score_matrix(m->encode_image(img), m->encode_text(ids));
    // Captions repeat (4 per class): a soft target over the same-class captions.
    torch::Tensor same = (ids.select(1, 1).unsqueeze(1) == ids.select(1, 1).unsqueeze(0)).to(torch::kFloat);
    torch::Tensor target = same / same.sum(1, true);
    torch::Tensor loss = -(target * torch::log_softmax(S, 1)).sum(1).mean();
    if (step == 0) first = loss.item<float>();
    last = loss.item<float>();
    loss.backward();
    opt.step();
  }
  EXPECT_LT(last, 0.5f * first) << "first " << first << " last " << last;
  // Classify every image by its best-scoring class caption.
  torch::NoGradGuard g;
  torch::Tensor class_ids = torch::zeros({10, 3}, torch::kLong);
  for (int c = 0; c < 10; ++c) {
    class_ids[c][0] = 2;
    class_ids[c][1] = 4 + c;
    class_ids[c][2] = 3;
  }
  torch::Tensor pred = m->score_matrix(m->encode_image(img), m->encode_text(class_ids)).argmax(1);
  const float acc = (pred == ids.select(1, 1) - 4).to(torch::kFloat).mean().item<float>();
  EXPECT_GT(acc, 0.8f);
}

}  // namespace
}  // namespace eqsim
