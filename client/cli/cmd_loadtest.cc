// eqsim loadtest: drive Embed / Score and report throughput and latency percentiles.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"
#include "client/cli/loadtest.h"
#include "client/image_encoding.h"
#include "model/data/fashion_mnist.h"
#include "model/core/status_macros.h"
#include "model/data/scene.h"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"

ABSL_FLAG(double, rate, 0,
          "Open loop: requests per second (latency counted from each request's slot); 0 = "
          "closed loop with --concurrency workers back to back");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(30), "How long to measure");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(2), "Unmeasured warm-up before --duration");
ABSL_FLAG(std::string, mix, "image=0.4,text=0.4,score=0.2",
          "Request mix: weights of image (Embed images), text (Embed texts), score (Score "
          "matrix)");
ABSL_FLAG(int32_t, image_size, 64,
          "Side of the generated images (Fashion-MNIST scenes rendered and resized, PNG)");
ABSL_FLAG(int32_t, images_per_request, 1, "Images per image-Embed and per Score request");
ABSL_FLAG(int32_t, texts_per_request, 1, "Texts per text-Embed and per Score request");
ABSL_FLAG(int32_t, pool_size, 256, "Distinct generated images / captions to draw requests from");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the generated pool and the request sequence");
ABSL_FLAG(int32_t, server_pid, 0,
          "PID of an eqsim-server on this machine: report its RSS at start, end and max");
ABSL_FLAG(absl::Duration, rss_sample_every, absl::Seconds(60),
          "With --server-pid: also record the server's RSS this often (a time series)");

ABSL_DECLARE_FLAG(std::string, texts_file);
ABSL_DECLARE_FLAG(std::string, images_file);
ABSL_DECLARE_FLAG(std::vector<std::string>, image);
ABSL_DECLARE_FLAG(int32_t, concurrency);

namespace eqsim::cli {
namespace {

// Scenes of Fashion-MNIST test images (the benchmark's kind of data), rendered, resized to
// `size` and PNG-encoded, with their captions.
absl::Status GeneratePool(int n, int size, uint64_t seed, std::vector<std::string>* images,
                          std::vector<std::string>* texts) {
  auto data = LoadFashionMnist(FashionMnistSplit::kTest);
  if (!data.ok()) return data.status();
  std::mt19937_64 rng(seed);
  for (int i = 0; i < n; ++i) {
    Scene scene = RandomScene(*data, 1, kSceneMaxItems, rng);
    cv::Mat rgb = RenderScene(scene, *data);
    if (size != rgb.cols) {
      cv::resize(rgb, rgb, cv::Size(size, size), 0, 0,
                 size < rgb.cols ? cv::INTER_AREA : cv::INTER_LINEAR);
    }
    cv::Mat bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    std::vector<uint8_t> png;
    if (!cv::imencode(".png", bgr, png)) return absl::InternalError("PNG encoding failed");
    images->emplace_back(png.begin(), png.end());
    texts->push_back(SceneCaption(scene));
  }
  return absl::OkStatus();
}

int RunLoadtestCmd(const ParsedArgs& args) {
  const std::string cmd = "loadtest";
  if (!args.positional.empty()) {
    return Fail(cmd, absl::InvalidArgumentError(absl::StrCat("unexpected argument '",
                                                             args.positional[0], "'")),
                kExitUsage);
  }
  LoadtestOptions lo;
  auto mix = ParseMix(absl::GetFlag(FLAGS_mix));
  if (!mix.ok()) return Fail(cmd, mix.status(), kExitUsage);
  lo.mix = *mix;
  lo.concurrency = absl::GetFlag(FLAGS_concurrency);
  lo.rate = absl::GetFlag(FLAGS_rate);
  lo.duration = absl::GetFlag(FLAGS_duration);
  lo.warmup = absl::GetFlag(FLAGS_warmup);
  lo.images_per_request = absl::GetFlag(FLAGS_images_per_request);
  lo.texts_per_request = absl::GetFlag(FLAGS_texts_per_request);
  lo.seed = absl::GetFlag(FLAGS_seed);
  lo.server_pid = absl::GetFlag(FLAGS_server_pid);
  lo.rss_sample_every = absl::GetFlag(FLAGS_rss_sample_every);
  lo.model = ModelFromFlags();
  const int size = absl::GetFlag(FLAGS_image_size);
  const int pool = absl::GetFlag(FLAGS_pool_size);
  if (size < 8 || size > 4096) {
    return Fail(cmd, absl::InvalidArgumentError(absl::StrCat("--image-size must be in [8, 4096], got ", size)),
                kExitUsage);
  }
  if (pool <= 0) return Fail(cmd, absl::InvalidArgumentError("--pool-size must be positive"), kExitUsage);
  if (lo.warmup < absl::ZeroDuration()) {
    return Fail(cmd, absl::InvalidArgumentError("--warmup must be >= 0"), kExitUsage);
  }

  // Given files replace the generated images / captions.
  for (const std::string& list : args.All("image")) {
    for (absl::string_view p : absl::StrSplit(list, ',', absl::SkipEmpty())) {
      auto bytes = ReadBinaryFile(std::string(p));
      if (!bytes.ok()) return Fail(cmd, bytes.status(), kExitUsage);
      lo.images.push_back(*std::move(bytes));
    }
  }
  if (!absl::GetFlag(FLAGS_texts_file).empty()) {
    auto data = ReadBinaryFile(absl::GetFlag(FLAGS_texts_file));
    if (!data.ok()) return Fail(cmd, data.status(), kExitUsage);
    for (absl::string_view l : absl::StrSplit(*data, '\n', absl::SkipWhitespace()))
      lo.texts.emplace_back(l);
  }
  for (const std::string& t : args.All("text")) lo.texts.push_back(t);
  if (lo.images.empty() || lo.texts.empty()) {
    std::vector<std::string> images, texts;
    absl::Status s = GeneratePool(pool, size, lo.seed, &images, &texts);
    if (!s.ok()) return Fail(cmd, Annotate(s, "generating the image pool"), kExitUsage);
    if (lo.images.empty()) lo.images = std::move(images);
    if (lo.texts.empty()) lo.texts = std::move(texts);
  }

  auto o = ClientOptionsFromFlags();
  if (!o.ok()) return Fail(cmd, o.status(), kExitUsage);
  // Errors are what a load test measures: no retries unless asked for explicitly.
  if (!args.Has("retries")) o->retry.max_attempts = 1;
  auto client = Client::Create(*std::move(o));
  if (!client.ok()) return Fail(cmd, client.status(), kExitUsage);

  // Fail fast (exit 1) when the server is not there at all, rather than after --duration.
  auto models = (*client)->ListModels();
  if (!models.ok()) return Fail(cmd, models.status(), kExitRpcError);

  ProgressBar bar("loadtest");
  const int64_t total_ms = absl::ToInt64Milliseconds(lo.duration);
  lo.progress = [&](absl::Duration elapsed, int64_t requests, int64_t errors, double p50) {
    const double secs = absl::ToDoubleSeconds(elapsed);
    bar.Update(absl::ToInt64Milliseconds(elapsed), total_ms,
               absl::StrFormat("%d req (%.0f/s), %d errors, p50 %.1f ms", requests,
                               secs > 0 ? requests / secs : 0.0, errors, p50));
  };
  if (!JsonOutput()) {
    std::fprintf(stderr, "loadtest: %zu images (%d px), %zu texts, %d target(s), warm-up %s\n",
                 lo.images.size(), size, lo.texts.size(), (*client)->num_endpoints(),
                 absl::FormatDuration(lo.warmup).c_str());
  }
  auto report = RunLoadtest(**client, lo);
  bar.Finish();
  if (!report.ok()) return Fail(cmd, report.status(), kExitUsage);
  if (JsonOutput()) {
    std::printf("%s\n", ReportToJson(*report).c_str());
  } else {
    std::printf("%s", ReportToText(*report).c_str());
  }
  // Every request failing means the server is unusable: say so in the exit code.
  return report->all.requests > 0 && report->all.ok == 0 ? kExitRpcError : kExitOk;
}

}  // namespace

std::vector<Command> LoadtestCommands() {
  return {{"loadtest", "",
           "Drive Embed / Score at a fixed concurrency or rate; print throughput, latency "
           "percentiles and errors by code",
           "Images: Fashion-MNIST scenes generated at --image-size (or --image files); texts: "
           "their captions (or --text / --texts-file). Requests are not retried unless "
           "--retries is given.\nExamples:\n  eqsim loadtest --concurrency 32 --duration 60s "
           "--mix image=1\n  eqsim loadtest --rate 200 --concurrency 64 --duration 10m "
           "--server-pid $(pidof eqsim-server) --json",
           {"concurrency", "rate", "duration", "warmup", "mix", "image_size",
            "images_per_request", "texts_per_request", "pool_size", "seed", "server_pid",
            "rss_sample_every", "image", "text", "texts_file", "model", "model_version"},
           RunLoadtestCmd}};
}

}  // namespace eqsim::cli
