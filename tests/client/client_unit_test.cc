// Unit tests of the client library that need no server.
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/chunking.h"
#include "client/client.h"
#include "client/image_encoding.h"
#include "client/retry.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/data/fashion_mnist.h"
#include "opencv2/core.hpp"
#include "opencv2/imgcodecs.hpp"

namespace eqsim {
namespace {

using ::testing::HasSubstr;

uint32_t U32(const std::string& b, size_t pos) {
  return static_cast<uint8_t>(b[pos]) | static_cast<uint8_t>(b[pos + 1]) << 8 |
         static_cast<uint8_t>(b[pos + 2]) << 16 | static_cast<uint32_t>(static_cast<uint8_t>(b[pos + 3])) << 24;
}

// The BMP must decode, with OpenCV exactly like the server does, to the very same pixels;
// odd widths exercise the 4-byte row padding, a stride larger than the row the stride.
TEST(EncodeBmp, OpenCvDecodesIdenticalPixels) {
  for (int width : {1, 2, 3, 5, 28, 33}) {
    const int height = 7;
    const int64_t stride = 3 * width + 5;  // padded source rows
    std::vector<uint8_t> rgb(static_cast<size_t>(stride * height), 0xEE);
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x)
        for (int c = 0; c < 3; ++c)
          rgb[y * stride + 3 * x + c] = static_cast<uint8_t>((y * 31 + x * 7 + c * 101) & 0xff);
    auto bmp = EncodeBmp(rgb.data(), width, height, stride);
    ASSERT_TRUE(bmp.ok()) << bmp.status();
    const size_t row_bytes = (3 * width + 3) / 4 * 4;
    EXPECT_EQ(bmp->size(), 54 + row_bytes * height);
    EXPECT_EQ(U32(*bmp, 2), bmp->size());
    EXPECT_EQ(U32(*bmp, 18), static_cast<uint32_t>(width));
    EXPECT_EQ(U32(*bmp, 22), static_cast<uint32_t>(height));
    EXPECT_EQ(SniffImageFormat(*bmp), "bmp");

    std::vector<uint8_t> buf(bmp->begin(), bmp->end());
    cv::Mat bgr = cv::imdecode(buf, cv::IMREAD_COLOR);
    ASSERT_FALSE(bgr.empty()) << "width " << width;
    ASSERT_EQ(bgr.cols, width);
    ASSERT_EQ(bgr.rows, height);
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x) {
        const cv::Vec3b p = bgr.at<cv::Vec3b>(y, x);
        ASSERT_EQ(p[2], rgb[y * stride + 3 * x + 0]) << "x " << x << " y " << y;
        ASSERT_EQ(p[1], rgb[y * stride + 3 * x + 1]);
        ASSERT_EQ(p[0], rgb[y * stride + 3 * x + 2]);
      }
  }
}

// A real Fashion-MNIST image, tinted into RGB, round-trips through BMP and OpenCV.
TEST(EncodeBmp, FashionMnistImageRoundTrips) {
  auto data = LoadFashionMnist(FashionMnistSplit::kTest);
  ASSERT_TRUE(data.ok()) << data.status();
  const uint8_t* img = data->image(17);
  std::vector<uint8_t> rgb(28 * 28 * 3);
  for (int i = 0; i < 28 * 28; ++i) {
    rgb[3 * i] = img[i];
    rgb[3 * i + 1] = static_cast<uint8_t>(img[i] / 2);
    rgb[3 * i + 2] = static_cast<uint8_t>(255 - img[i]);
  }
  auto input = Input::ImageRgb(rgb.data(), 28, 28, 28 * 3);
  ASSERT_TRUE(input.ok());
  EXPECT_EQ(input->kind, Input::Kind::kImage);
  std::vector<uint8_t> buf(input->data.begin(), input->data.end());
  cv::Mat bgr = cv::imdecode(buf, cv::IMREAD_COLOR);
  ASSERT_EQ(bgr.rows, 28);
  for (int i = 0; i < 28 * 28; ++i) {
    const cv::Vec3b p = bgr.at<cv::Vec3b>(i / 28, i % 28);
    ASSERT_EQ(p[2], rgb[3 * i]);
    ASSERT_EQ(p[1], rgb[3 * i + 1]);
    ASSERT_EQ(p[0], rgb[3 * i + 2]);
  }
}

TEST(EncodeBmp, RejectsBadArguments) {
  std::vector<uint8_t> rgb(300);
  auto s = EncodeBmp(rgb.data(), 0, 10, 30).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("0 x 10"));
  s = EncodeBmp(rgb.data(), 10, 10, 29).status();
  EXPECT_THAT(s.message(), HasSubstr("stride 29"));
  s = EncodeBmp(nullptr, 10, 10, 30).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = EncodeBmp(rgb.data(), 1 << 15, 1 << 15, int64_t{3} << 15).status();
  EXPECT_THAT(s.message(), HasSubstr("exceeds the limit"));
}

TEST(ReadBinaryFile, NamesThePath) {
  auto r = ReadBinaryFile("/nonexistent/dir/x.png");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("/nonexistent/dir/x.png"));
  r = ReadBinaryFile("/tmp");
  EXPECT_THAT(r.status().message(), HasSubstr("is a directory"));
  auto in = Input::ImageFile("/nonexistent.png");
  EXPECT_THAT(in.status().message(), HasSubstr("image '/nonexistent.png'"));
}

TEST(SniffImageFormat, KnowsTheCommonFormats) {
  EXPECT_EQ(SniffImageFormat(std::string("\x89PNG\r\n\x1a\n....", 12)), "png");
  EXPECT_EQ(SniffImageFormat("\xff\xd8\xff\xe0"), "jpeg");
  EXPECT_EQ(SniffImageFormat("RIFF\1\2\3\4WEBPVP8 "), "webp");
  EXPECT_EQ(SniffImageFormat("\x93NUMPY\1\0"), "npy");
  EXPECT_EQ(SniffImageFormat("hello world"), "");
}

TEST(PlanChunks, SplitsByItemsAndBytesInOrder) {
  ChunkLimits limits;
  limits.max_items = 3;
  limits.max_bytes = 100 + 2 * kPerItemOverheadBytes;  // two payloads of <= 50 bytes
  // 10 small items: by count 3,3,3,1.
  auto c = PlanChunks(std::vector<int64_t>(10, 1), limits);
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->size(), 4u);
  EXPECT_EQ((*c)[0].begin, 0);
  EXPECT_EQ((*c)[0].end, 3);
  EXPECT_EQ((*c)[3].begin, 9);
  EXPECT_EQ((*c)[3].end, 10);
  // By bytes: 60 + 50 do not fit together; 50 + 40 do; 10 + 100 do not.
  c = PlanChunks({60, 50, 40, 10, 100}, limits);
  ASSERT_TRUE(c.ok());
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const Chunk& ch : *c) {
    ranges.push_back({ch.begin, ch.end});
    EXPECT_LE(ch.bytes, limits.max_bytes);
  }
  EXPECT_EQ(ranges, (std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {1, 3}, {3, 4}, {4, 5}}));
  // Contiguous cover of every item.
  int64_t next = 0;
  for (const Chunk& ch : *c) {
    EXPECT_EQ(ch.begin, next);
    next = ch.end;
  }
  EXPECT_EQ(next, 5);
  EXPECT_TRUE(PlanChunks({}, limits)->empty());
}

TEST(PlanChunks, ItemTooLargeNamesIt) {
  ChunkLimits limits;
  limits.max_items = 8;
  limits.max_bytes = 1000;
  auto c = PlanChunks({10, 20, 5000, 1}, limits);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("item 2: 5000 bytes"));
  limits.max_items = 0;
  EXPECT_FALSE(PlanChunks({1}, limits).ok());
}

class FakeSleeper : public Sleeper {
 public:
  void Sleep(absl::Duration d) override { delays.push_back(d); }
  std::vector<absl::Duration> delays;
};

TEST(Retry, BacksOffExponentiallyWithBoundedJitter) {
  RetryOptions o;
  o.max_attempts = 6;
  o.initial_backoff = absl::Milliseconds(100);
  o.multiplier = 2;
  o.max_backoff = absl::Seconds(1);
  o.jitter = 0.25;
  o.seed = 42;
  FakeSleeper sleeper;
  int calls = 0;
  absl::Status s = RunWithRetries(o, true, &sleeper, [&](int attempt) {
    EXPECT_EQ(attempt, calls);
    ++calls;
    return calls < 5 ? absl::UnavailableError("down") : absl::OkStatus();
  });
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(calls, 5);
  ASSERT_EQ(sleeper.delays.size(), 4u);
  const double base[] = {0.1, 0.2, 0.4, 0.8};
  for (int i = 0; i < 4; ++i) {
    const double d = absl::ToDoubleSeconds(sleeper.delays[i]);
    EXPECT_GE(d, base[i] * 0.75 - 1e-9) << i;
    EXPECT_LE(d, std::min(1.0, base[i] * 1.25) + 1e-9) << i;
  }
}

TEST(Retry, JitterSpreadsClientsAndCapHolds) {
  RetryOptions o;
  o.initial_backoff = absl::Seconds(1);
  o.max_backoff = absl::Seconds(3);
  o.jitter = 0.5;
  o.seed = 7;
  Backoff a(o);
  o.seed = 8;
  Backoff b(o);
  bool differ = false;
  for (int i = 0; i < 10; ++i) {
    absl::Duration da = a.Next(), db = b.Next();
    differ |= da != db;
    EXPECT_LE(da, absl::Seconds(3));
    EXPECT_GE(da, absl::Milliseconds(500));
  }
  EXPECT_TRUE(differ);
}

TEST(Retry, OnlyTransientCodesAndIdempotentCalls) {
  RetryOptions o;
  o.max_attempts = 4;
  FakeSleeper sleeper;
  int calls = 0;
  absl::Status s = RunWithRetries(o, true, &sleeper, [&](int) {
    ++calls;
    return absl::InvalidArgumentError("item 0: bad");
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(s.message(), "item 0: bad");

  calls = 0;
  s = RunWithRetries(o, false, &sleeper, [&](int) {
    ++calls;
    return absl::UnavailableError("down");
  });
  EXPECT_EQ(calls, 1);  // not idempotent: never retried
  EXPECT_TRUE(sleeper.delays.empty());

  calls = 0;
  s = RunWithRetries(o, true, &sleeper, [&](int) {
    ++calls;
    return absl::ResourceExhaustedError("queue full");
  });
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("gave up after 4 attempts"));
  EXPECT_EQ(sleeper.delays.size(), 3u);

  o.retry_resource_exhausted = false;
  calls = 0;
  s = RunWithRetries(o, true, &sleeper, [&](int) {
    ++calls;
    return absl::ResourceExhaustedError("queue full");
  });
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kDeadlineExceeded, o));
  EXPECT_FALSE(IsRetryableCode(absl::StatusCode::kOk, o));
}

TEST(FromGrpcStatus, KeepsCodeAndServerMessage) {
  absl::Status s = FromGrpcStatus(
      grpc::Status(grpc::StatusCode::NOT_FOUND, "model 'x' is not served"), "Embed @ h:1");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "Embed @ h:1: model 'x' is not served");
  for (int code = 1; code <= 16; ++code) {
    absl::Status m = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(code), "m"));
    EXPECT_EQ(static_cast<int>(m.code()), code);
    EXPECT_EQ(m.message(), "m");
  }
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(ClientCreate, ValidatesOptions) {
  ClientOptions o;
  EXPECT_THAT(Client::Create(o).status().message(), HasSubstr("no target"));
  o.targets = {"localhost:1"};
  o.max_items_per_request = 0;
  EXPECT_THAT(Client::Create(o).status().message(), HasSubstr("max items per request"));
  o.max_items_per_request = 8;
  o.tls.cert_file = "/x.pem";
  EXPECT_THAT(Client::Create(o).status().message(), HasSubstr("together"));
  o.tls.key_file = "/nonexistent-key.pem";
  auto c = Client::Create(o);
  EXPECT_THAT(c.status().message(), HasSubstr("TLS client certificate"));
  o.tls = {};
  o.load_balancing = "random";
  EXPECT_THAT(Client::Create(o).status().message(), HasSubstr("round_robin or pick_first"));
  o.load_balancing = "round_robin";
  EXPECT_TRUE(Client::Create(o).ok());
}

// A watch whose server never answers gives up after watch_max_reconnects reconnections,
// telling the caller about each one, and returns the last error.
TEST(ClientWatch, GivesUpAfterMaxReconnects) {
  FakeSleeper sleeper;
  ClientOptions o;
  o.targets = {"127.0.0.1:1"};  // nothing listens on port 1
  o.sleeper = &sleeper;
  o.watch_max_reconnects = 3;
  auto client = Client::Create(o);
  ASSERT_TRUE(client.ok()) << client.status();
  int reconnects = 0;
  auto r = (*client)->WatchEvaluation("ev-x", nullptr, [&](const absl::Status& cause, int n) {
    EXPECT_EQ(cause.code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(n, ++reconnects);
  });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("gave up after 3 reconnections"));
  EXPECT_EQ(reconnects, 3);
  EXPECT_EQ(sleeper.delays.size(), 3u);
}

}  // namespace
}  // namespace eqsim
