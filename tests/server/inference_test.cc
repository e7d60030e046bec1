// The online path (preprocess pool -> batcher -> encoder -> scatter) with real image decoding
// and tokenisation and a fake, deterministic encoder whose output for an item does not depend
// on which batch it ran in.
#include "server/inference.h"

#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/image/preprocess.h"
#include "model/text/word_tokenizer.h"
#include "opencv2/core.hpp"

namespace eqsim {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr int kDim = 4;

class FakeEncoder : public Encoder {
 public:
  absl::StatusOr<Matrix> EncodeImages(const ImageBatch& b) override {
    Record(b.n);
    if (fail) return absl::InternalError("fake encoder failure");
    Matrix m(b.n, kDim);
    const int64_t plane = static_cast<int64_t>(b.height) * b.width;
    for (int64_t i = 0; i < b.n; ++i) {
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (int64_t k = 0; k < plane; ++k) s += b.data[(i * 3 + c) * plane + k];
        m.at(i, c) = static_cast<float>(s / plane);
      }
      m.at(i, 3) = 1.f;
    }
    return m;
  }
  absl::StatusOr<Matrix> EncodeTexts(const TokenBatch& t) override {
    Record(t.n);
    if (fail) return absl::InternalError("fake encoder failure");
    Matrix m(t.n, kDim);
    for (int64_t i = 0; i < t.n; ++i) {
      double sum = 0, nz = 0;
      for (int j = 0; j < t.length; ++j) {
        sum += t.ids[i * t.length + j];
        nz += t.ids[i * t.length + j] != 0;
      }
      m.at(i, 0) = static_cast<float>(sum);
      m.at(i, 1) = static_cast<float>(nz);
      m.at(i, 2) = static_cast<float>(t.ids[i * t.length + 1]);
      m.at(i, 3) = -1.f;
    }
    return m;
  }
  float logit_scale() const override { return std::log(10.f); }
  int dim() const override { return kDim; }
  std::string device() const override { return "cpu"; }
  std::string backend() const override { return "fake"; }

  void Record(int64_t n) {
    int64_t prev = max_batch.load();
    while (n > prev && !max_batch.compare_exchange_weak(prev, n)) {
    }
    batches++;
  }
  std::atomic<bool> fail{false};
  std::atomic<int64_t> max_batch{0};
  std::atomic<int> batches{0};
};

std::string Png(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  cv::Mat m(h, w, CV_8UC3, cv::Scalar(r, g, b));
  return EncodePng(m);
}

class InferenceTest : public ::testing::Test {
 protected:
  void SetUp() override { Build(/*threads=*/1, /*max_batch=*/8, /*max_queue=*/64); }
  void Build(int threads, int max_batch, int max_queue) {
    inference_.reset();
    batcher_.reset();
    BatcherOptions bo;
    bo.num_threads = threads;
    batcher_ = std::make_unique<Batcher>(bo);
    InferenceLimits limits;
    limits.max_items_per_request = 100;
    limits.max_text_bytes = 200;
    inference_ = std::make_unique<Inference>(batcher_.get(), &pool_, nullptr, limits,
                                             [this](bool ok) { results_.push_back(ok); });
    auto model = std::make_shared<LoadedModel>();
    model->name = "fake";
    model->version = 1;
    auto enc = std::make_unique<FakeEncoder>();
    encoder_ = enc.get();
    model->encoder = std::move(enc);
    model->tokenizer = WordTokenizer::FromVocabulary({"a", "bag", "red", "shoe", "two"});
    config::ImagePreprocess ip;
    ip.set_recipe(config::ImagePreprocess::NATIVE);
    ip.set_size(16);
    auto pre = ImagePreprocessor::Create(ip);
    ASSERT_TRUE(pre.ok()) << pre.status();
    model->preprocessor = std::make_unique<ImagePreprocessor>(*pre);
    version_ = std::make_shared<ServingVersion>();
    version_->model = model;
    version_->batching.max_batch_size = max_batch;
    version_->batching.max_queue_delay = absl::ZeroDuration();
    version_->batching.max_queue_size = max_queue;
    version_->image_queue = "fake/1/image";
    version_->text_queue = "fake/1/text";
    ASSERT_TRUE(inference_->AddQueues(version_).ok());
  }
  absl::StatusOr<Matrix> Run(std::vector<ItemRef> items) {
    return inference_->EmbedSync(version_, std::move(items), {}, /*normalize=*/false);
  }
  // What the fake encoder gives for one item alone.
  Matrix Single(const ItemRef& item) {
    auto m = Run({item});
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *m : Matrix();
  }

  ThreadPool pool_{2};
  std::unique_ptr<Batcher> batcher_;
  std::unique_ptr<Inference> inference_;
  std::shared_ptr<ServingVersion> version_;
  FakeEncoder* encoder_ = nullptr;
  std::vector<bool> results_;
};

TEST_F(InferenceTest, MixedItemsKeepTheirOrderAcrossSplitBatches) {
  std::vector<std::string> images, texts;
  for (int i = 0; i < 35; ++i) {
    images.push_back(Png(10 + i, 12, static_cast<uint8_t>(7 * i), static_cast<uint8_t>(255 - 5 * i), 3));
  }
  const char* words[] = {"a red bag", "two shoes", "red", "bag bag shoe", "a two red shoe"};
  for (int i = 0; i < 35; ++i) texts.push_back(words[i % 5] + std::string(i % 3, '!'));
  std::vector<ItemRef> items;
  for (int i = 0; i < 35; ++i) {
    items.push_back({true, images[i]});
    items.push_back({false, texts[i]});
  }
  auto m = Run(items);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->rows, 70);
  ASSERT_EQ(m->cols, kDim);
  EXPECT_LE(encoder_->max_batch.load(), 8);
  EXPECT_GE(encoder_->batches.load(), 10);  // 35 images and 35 texts in chunks of <= 8
  for (int i = 0; i < 70; ++i) {
    Matrix one = Single(items[i]);
    ASSERT_EQ(one.rows, 1);
    for (int d = 0; d < kDim; ++d) EXPECT_EQ(m->at(i, d), one.at(0, d)) << "item " << i;
  }
  // The fake text embedding ends in -1, the image one in +1: modality routing is right.
  EXPECT_EQ(m->at(0, 3), 1.f);
  EXPECT_EQ(m->at(1, 3), -1.f);
}

TEST_F(InferenceTest, BadImageFailsOnlyItsRequestAndNamesOnlyItsIndex) {
  const std::string good = Png(20, 20, 200, 10, 10);
  std::string truncated = Png(20, 20, 1, 2, 3);
  truncated.resize(truncated.size() / 2);
  absl::Notification a_done, b_done;
  absl::StatusOr<Matrix> a, b;
  inference_->Embed(version_, {{true, good}, {false, "a red bag"}, {true, truncated}, {true, good}},
                    {}, [&](absl::StatusOr<Matrix> r) {
                      a = std::move(r);
                      a_done.Notify();
                    });
  inference_->Embed(version_, {{true, good}, {true, good}}, {}, [&](absl::StatusOr<Matrix> r) {
    b = std::move(r);
    b_done.Notify();
  });
  a_done.WaitForNotification();
  b_done.WaitForNotification();
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(a.status().message());
  EXPECT_THAT(msg, StartsWith("item 2: "));
  EXPECT_THAT(msg, HasSubstr("PNG"));
  EXPECT_THAT(msg, Not(HasSubstr("item 0")));
  EXPECT_THAT(msg, Not(HasSubstr("item 1")));
  EXPECT_THAT(msg, Not(HasSubstr("item 3")));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->rows, 2);
}

TEST_F(InferenceTest, BadTextsAreNamedByIndex) {
  auto empty = Run({{false, "a bag"}, {false, ""}});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.status().message()), StartsWith("item 1: text is empty"));
  auto utf8 = Run({{false, "a bag"}, {false, "ok"}, {false, "bad \xff byte"}});
  EXPECT_THAT(std::string(utf8.status().message()), StartsWith("item 2: text is not valid UTF-8"));
  const std::string longer(201, 'a');
  auto too_long = Run({{false, longer}});
  EXPECT_THAT(std::string(too_long.status().message()), StartsWith("item 0: text is 201 bytes"));
}

TEST_F(InferenceTest, RequestLimits) {
  EXPECT_EQ(Run({}).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<ItemRef> many(101, ItemRef{false, "bag"});
  auto r = Run(many);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("--max-items-per-request"));
}

TEST_F(InferenceTest, EncoderFailureIsInternalAndReportedThenRecovers) {
  encoder_->fail = true;
  auto r = Run({{false, "a bag"}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("fake encoder failure"));
  encoder_->fail = false;
  ASSERT_TRUE(Run({{false, "a bag"}}).ok());
  ASSERT_EQ(results_.size(), 2u);
  EXPECT_FALSE(results_[0]);
  EXPECT_TRUE(results_[1]);
}

TEST_F(InferenceTest, FullQueueRefusesTheWholeRequest) {
  Build(/*threads=*/0, /*max_batch=*/4, /*max_queue=*/6);  // manual batcher: nothing runs
  absl::Notification first_done, second_done;
  absl::StatusOr<Matrix> first, second;
  inference_->Embed(version_, std::vector<ItemRef>(5, ItemRef{false, "bag"}), {},
                    [&](absl::StatusOr<Matrix> r) {
                      first = std::move(r);
                      first_done.Notify();
                    });
  // Wait until the first request sits in the queue (preprocessing is asynchronous).
  while (batcher_->QueueDepth("fake/1/text") != 5) absl::SleepFor(absl::Milliseconds(1));
  inference_->Embed(version_, std::vector<ItemRef>(2, ItemRef{false, "bag"}), {},
                    [&](absl::StatusOr<Matrix> r) {
                      second = std::move(r);
                      second_done.Notify();
                    });
  second_done.WaitForNotification();
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(batcher_->QueueDepth("fake/1/text"), 5);
  EXPECT_EQ(batcher_->RunReadyBatches(), 2);  // 4 + 1
  first_done.WaitForNotification();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->rows, 5);
}

TEST_F(InferenceTest, CancelledRequestLeavesTheQueue) {
  Build(/*threads=*/0, /*max_batch=*/4, /*max_queue=*/64);
  auto token = std::make_shared<CancelToken>();
  absl::Notification done;
  absl::StatusOr<Matrix> r;
  CallOptions o;
  o.cancel = token;
  inference_->Embed(version_, std::vector<ItemRef>(6, ItemRef{false, "bag"}), o,
                    [&](absl::StatusOr<Matrix> m) {
                      r = std::move(m);
                      done.Notify();
                    });
  while (batcher_->QueueDepth("fake/1/text") != 6) absl::SleepFor(absl::Milliseconds(1));
  token->Cancel();
  EXPECT_EQ(batcher_->RunReadyBatches(), 0);
  done.WaitForNotification();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(encoder_->batches.load(), 0);
  EXPECT_EQ(batcher_->QueueDepth("fake/1/text"), 0);
}

TEST(ComputeScores, MatrixPairwiseSoftmax) {
  Matrix img(2, 2), txt(3, 2);
  img.data = {3, 4, 0, 2};        // normalised: (0.6, 0.8), (0, 1)
  txt.data = {1, 0, 0, 5, 1, 1};  // (1, 0), (0, 1), (0.7071, 0.7071)
  auto r = ComputeScores(img, txt, std::log(2.f), false, true);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rows, 2);
  EXPECT_EQ(r->cols, 3);
  const float s2 = std::sqrt(0.5f);
  const std::vector<float> want = {0.6f, 0.8f, 1.4f * s2, 0.f, 1.f, s2};
  for (int k = 0; k < 6; ++k) {
    EXPECT_NEAR(r->cosine[k], want[k], 1e-6);
    EXPECT_NEAR(r->logits[k], 2 * want[k], 1e-5);
  }
  EXPECT_NEAR(r->scale, 2.f, 1e-6);
  for (int i = 0; i < 2; ++i) {
    double z = 0;
    for (int j = 0; j < 3; ++j) z += std::exp(2.0 * want[i * 3 + j]);
    for (int j = 0; j < 3; ++j) {
      EXPECT_NEAR(r->probs[i * 3 + j], std::exp(2.0 * want[i * 3 + j]) / z, 1e-6);
    }
  }
  auto p = ComputeScores(img, Matrix(2, 2), 0, true, false);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->cols, 1);
  EXPECT_EQ(ComputeScores(img, txt, 0, true, false).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace eqsim
