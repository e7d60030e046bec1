// In-process encoding throughput of any model in a repository (native or TorchScript), per
// batch size, for images and texts: the reference the server benchmark is compared with, and
// the ceiling of what dynamic batching can gain on this machine for that model.
//
//   eqsim-encode-bench --repository R --model M [--version 0] [--batch-sizes 1,8,32]
//                      [--threads 1] [--workers 2] [--seconds 3] [--json]
//
// Inputs: Fashion-MNIST test scenes (rendered, then the model's own preprocessing) and their
// captions (the model's own tokenizer), prepared before timing; so this measures the encoder
// alone. `--workers` threads call the encoder at once (like the server's --batch-threads),
// each with `--threads` LibTorch intra-op threads. Prints one line (or JSON object) per
// modality and batch size, then the ratio of the largest batch size to batch size 1.
// A plain driver: no timing assertions anywhere.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "model/core/command_line.h"
#include "model/data/fashion_mnist.h"
#include "model/repo/repository.h"
#include "model/train/data_source.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, repository, "", "model repository (required)");
ABSL_FLAG(std::string, model, "", "model name (required)");
ABSL_FLAG(int64_t, version, 0, "model version (0 = the newest)");
ABSL_FLAG(std::string, batch_sizes, "1,8,32", "batch sizes to measure, comma-separated");
ABSL_FLAG(int32_t, threads, 1, "LibTorch intra-op threads (0 = leave LibTorch's default)");
ABSL_FLAG(int32_t, workers, 2, "threads calling the encoder at the same time");
ABSL_FLAG(double, seconds, 3, "seconds per measurement (after one warm-up call per worker)");
ABSL_FLAG(bool, json, false, "one JSON object per line");

namespace eqsim {
namespace {

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Items per second with `workers` threads each encoding `batch` again and again: every worker
// makes one warm-up call, then all start together and stop after `seconds`.
template <typename Fn>
double Measure(int workers, double seconds, int batch, Fn encode, bool* ok) {
  std::atomic<int64_t> items{0};
  std::atomic<int> ready{0};
  std::atomic<bool> failed{false};
  std::atomic<double> begin{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      if (!encode()) failed = true;
      if (++ready == workers) begin = Seconds();
      while (begin.load() == 0) std::this_thread::yield();
      while (!failed && Seconds() - begin.load() < seconds) {
        if (!encode()) failed = true;
        items += batch;
      }
    });
  }
  for (auto& t : threads) t.join();
  *ok = !failed;
  return items / (Seconds() - begin.load());
}

int Run() {
  const std::string repo = absl::GetFlag(FLAGS_repository);
  const std::string name = absl::GetFlag(FLAGS_model);
  if (repo.empty() || name.empty()) {
    std::cerr << "encode-bench: --repository and --model are required (see --help)\n";
    return 2;
  }
  std::vector<int> sizes;
  for (absl::string_view p : absl::StrSplit(absl::GetFlag(FLAGS_batch_sizes), ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(p, &v) || v < 1) {
      std::cerr << "encode-bench: --batch-sizes: '" << p << "' is not a positive integer\n";
      return 2;
    }
    sizes.push_back(v);
  }
  const int workers = absl::GetFlag(FLAGS_workers);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  if (workers < 1 || seconds <= 0) {
    std::cerr << "encode-bench: --workers must be >= 1 and --seconds > 0\n";
    return 2;
  }
  LoadOptions lo;
  lo.threads = absl::GetFlag(FLAGS_threads);
  int64_t version = absl::GetFlag(FLAGS_version);
  if (version == 0) {
    auto versions = ListVersions(repo + "/" + name);
    if (!versions.ok() || versions->empty()) {
      std::cerr << "encode-bench: model " << name << " has no version in " << repo << "\n";
      return 1;
    }
    version = versions->back();
  }
  auto model = LoadModelVersion(repo, name, version, lo);
  if (!model.ok()) {
    std::cerr << "encode-bench: " << model.status().message() << "\n";
    return 1;
  }
  auto data = LoadFashionMnist(FashionMnistSplit::kTest);
  if (!data.ok()) {
    std::cerr << "encode-bench: " << data.status().message() << "\n";
    return 1;
  }
  const int largest = *std::max_element(sizes.begin(), sizes.end());
  HeldOutScenes scenes = MakeHeldOutScenes(*data, largest, 7);
  std::vector<ImageTensor> tensors;
  for (const auto& m : scenes.images) tensors.push_back((*model)->preprocessor->FromRgb(m));

  const bool json = absl::GetFlag(FLAGS_json);
  const LoadedModel& m = **model;
  std::map<std::string, std::map<int, double>> rate;
  for (const char* modality : {"image", "text"}) {
    for (int bs : sizes) {
      std::vector<const ImageTensor*> ptrs;
      std::vector<std::string> captions;
      for (int i = 0; i < bs; ++i) {
        ptrs.push_back(&tensors[i]);
        captions.push_back(scenes.captions[i]);
      }
      const bool images = std::string(modality) == "image";
      ImageBatch ib;
      TokenBatch tb;
      if (images) {
        ib = StackImages(ptrs);
      } else {
        auto t = m.tokenizer->EncodeBatch(captions);
        if (!t.ok()) {
          std::cerr << "encode-bench: " << t.status().message() << "\n";
          return 1;
        }
        tb = *std::move(t);
      }
      bool ok = false;
      const double r = Measure(workers, seconds, bs, [&] {
        return images ? m.encoder->EncodeImages(ib).ok() : m.encoder->EncodeTexts(tb).ok();
      }, &ok);
      if (!ok) {
        std::cerr << "encode-bench: encoding a " << modality << " batch of " << bs << " failed\n";
        return 1;
      }
      rate[modality][bs] = r;
      if (json) {
        std::cout << nlohmann::json{{"model", name},       {"version", m.version},
                                    {"backend", m.encoder->backend()},
                                    {"modality", modality}, {"batch", bs},
                                    {"workers", workers},   {"threads", lo.threads},
                                    {"items_per_s", r}}
                         .dump()
                  << std::endl;
      } else {
        std::printf("%-5s batch %4d  %d worker(s) x %d thread(s)  %10.1f items/s\n", modality, bs,
                    workers, lo.threads, r);
        std::fflush(stdout);
      }
    }
  }
  if (rate["image"].count(1) && sizes.size() > 1) {
    const double ri = rate["image"][largest] / rate["image"][1];
    const double rt = rate["text"][largest] / rate["text"][1];
    if (json) {
      std::cout << nlohmann::json{{"summary", true}, {"largest_batch", largest},
                                  {"image_ratio_vs_batch1", ri}, {"text_ratio_vs_batch1", rt}}
                       .dump()
                << std::endl;
    } else {
      std::printf("batch %d vs batch 1: images %.2fx, texts %.2fx\n", largest, ri, rt);
    }
  }
  return 0;
}

}  // namespace
}  // namespace eqsim

int main(int argc, char** argv) {
  const std::vector<std::string> rest = eqsim::ParseProgramFlags(
      argc, argv,
      "In-process encoding throughput of a repository model per batch size (images and "
      "texts).\n  eqsim-encode-bench --repository R --model M [--batch-sizes 1,8,32] "
      "[--threads 1] [--workers 2] [--seconds 3] [--json]",
      "encode_bench");
  if (rest.size() > 1) {
    std::cerr << "encode-bench: unexpected argument '" << rest[1] << "'\n";
    return 2;
  }
  return eqsim::Run();
}
