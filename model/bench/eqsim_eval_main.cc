// eqsim-eval: in-process EqBen-style evaluation and the Fashion-MNIST minimal-change benchmark.
//
//   eqsim-eval generate --out DIR [--per-subset 500] [--seed 7] [--subsets location,...]
//   eqsim-eval run --repository R --model M [--version V] --format FORMAT --annotations F
//                  --image-root D [--valse-root src=dir,...] [--subsets a,b] [--limit N]
//                  [--scores-out f.npy] [--batch-size 64] [--threads 2] [--json]
//
// Exit codes: 0 success, 1 failure (bad data, model or inference error, cancelled), 2 usage.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "model/bench/encoder_source.h"
#include "model/bench/evaluator.h"
#include "model/bench/generator.h"
#include "model/bench/readers.h"
#include "model/core/command_line.h"
#include "model/repo/repository.h"
#include "nlohmann/json.hpp"

// generate
ABSL_FLAG(std::string, out, "", "generate: output directory of the benchmark");
ABSL_FLAG(int64_t, per_subset, 500, "generate: samples per subset");
ABSL_FLAG(uint64_t, seed, 7, "generate: random seed (same seed, same files)");
ABSL_FLAG(int32_t, min_items, 2, "generate: fewest items per scene (>= 2)");
ABSL_FLAG(int32_t, max_items, 4, "generate: most items per scene (<= 4)");
ABSL_FLAG(std::string, fashion_mnist_dir, "/usr/share/datasets/fashion-mnist",
          "generate: Fashion-MNIST folder (the t10k test files are used)");
// run
ABSL_FLAG(std::string, repository, "", "run: model repository folder");
ABSL_FLAG(std::string, model, "", "run: model name in the repository");
ABSL_FLAG(int64_t, version, 0, "run: model version (0 = the newest)");
ABSL_FLAG(std::string, format, "",
          "run: winoground | eqben-pairs | eqben-video | eqben-ag | eqben-leaderboard | valse");
ABSL_FLAG(std::string, annotations, "", "run: annotation file");
ABSL_FLAG(std::string, image_root, "", "run: folder the annotation's image paths are relative to");
ABSL_FLAG(std::string, valse_root, "",
          "run: VALSE image roots per source dataset, e.g. coco2017=/data/coco,visual7w=/data/v7w");
ABSL_FLAG(bool, valse_all, false, "run: VALSE: score every entry, not only mturk.caption >= 2");
ABSL_FLAG(std::string, subset_name, "",
          "run: subset name for eqben-pairs/video/ag (default: the annotation file's stem)");
ABSL_FLAG(int64_t, limit, 0, "run: at most this many samples per subset (0 = all)");
ABSL_FLAG(std::string, scores_out, "",
          "run: write per-sample scores as .npy (leaderboard: 1-D, one per entry; pairs [N,4]; "
          "VALSE [N,2]; NaN = skipped)");
ABSL_FLAG(int64_t, batch_size, 64, "run: items per encoder batch");
ABSL_FLAG(int32_t, threads, 2, "run: LibTorch intra-op threads");
ABSL_FLAG(int32_t, load_threads, 2, "run: threads reading image files (pipelined with encoding)");
ABSL_FLAG(int32_t, decode_threads, 2, "run: threads decoding + preprocessing images");
ABSL_FLAG(int64_t, chunk_size, 2048, "run: samples per evaluation chunk");
ABSL_FLAG(int64_t, max_image_bytes, int64_t{64} << 20, "run: larger image files are skipped");
ABSL_FLAG(bool, json, false, "print the result as JSON on stdout");
ABSL_FLAG(int64_t, show_skipped, 10, "run: skipped entries listed in the table output");
// both
ABSL_FLAG(std::string, subsets, "",
          "comma list of subsets to keep (run) or to generate (generate; default all four)");
ABSL_FLAG(bool, progress, true, "progress bar on stderr");

namespace eqsim {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

int Usage(const std::string& msg) {
  std::cerr << "eqsim-eval: " << msg << "\n(see eqsim-eval --help)\n";
  return kExitUsage;
}

int Fail(const absl::Status& s) {
  std::cerr << "eqsim-eval: " << s << "\n";
  return kExitFailure;
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipWhitespace())) {
    out.emplace_back(part);
  }
  return out;
}

// A progress bar: redrawn in place on a terminal, a line every few seconds otherwise.
class ProgressBar {
 public:
  ProgressBar(std::string what, bool enabled)
      : what_(std::move(what)),
        enabled_(enabled),
        tty_(isatty(2)),
        start_(std::chrono::steady_clock::now()) {}

  void Update(int64_t done, int64_t total) {
    if (!enabled_ || total <= 0) return;
    const auto now = std::chrono::steady_clock::now();
    const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
    const bool final = done >= total;
    if (!final && since_draw < (tty_ ? 0.1 : 5.0)) return;
    if (final && finished_) return;
    finished_ = final;
    last_draw_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    if (first_done_ < 0) first_done_ = done;
    const double rate = elapsed > 0 ? (done - first_done_) / elapsed : 0;
    const double eta = rate > 0 ? (total - done) / rate : 0;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(kWidth * done / total);
    std::string bar(filled, '=');
    if (filled < kWidth) bar += '>' + std::string(kWidth - filled - 1, ' ');
    std::string line =
        absl::StrFormat("%s [%s] %3d%% %d/%d  %.1f/s  ETA %.0fs", what_, bar,
                        static_cast<int>(100 * done / total), done, total, rate, eta);
    if (tty_) {
      std::fprintf(stderr, "\r%s\033[K%s", line.c_str(), final ? "\n" : "");
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
  }

 private:
  std::string what_;
  bool enabled_;
  bool tty_;
  bool finished_ = false;
  int64_t first_done_ = -1;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
};

int Generate() {
  GeneratorOptions opts;
  opts.out_dir = absl::GetFlag(FLAGS_out);
  if (opts.out_dir.empty()) return Usage("generate needs --out DIR");
  opts.per_subset = absl::GetFlag(FLAGS_per_subset);
  if (opts.per_subset <= 0) return Usage("--per-subset must be > 0");
  opts.seed = absl::GetFlag(FLAGS_seed);
  opts.min_items = absl::GetFlag(FLAGS_min_items);
  opts.max_items = absl::GetFlag(FLAGS_max_items);
  opts.fashion_mnist_dir = absl::GetFlag(FLAGS_fashion_mnist_dir);
  if (!absl::GetFlag(FLAGS_subsets).empty()) opts.subsets = SplitList(absl::GetFlag(FLAGS_subsets));
  ProgressBar bar("generate", absl::GetFlag(FLAGS_progress));
  opts.progress = [&](int64_t done, int64_t total) { bar.Update(done, total); };
  auto gen = GenerateBenchmark(opts);
  if (!gen.ok()) return Fail(gen.status());
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::ordered_json j;
    j["out"] = gen->out_dir;
    j["samples"] = gen->samples;
    j["winoground"] = gen->winoground_jsonl;
    j["subset_lists"] = gen->subset_lists;
    j["leaderboard"] = gen->leaderboard_json;
    j["scenes"] = gen->scenes_json;
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "wrote " << gen->samples << " samples to " << gen->out_dir << "\n"
              << "  winoground:  " << gen->winoground_jsonl << "\n";
    for (const auto& l : gen->subset_lists) std::cout << "  eqben-pairs: " << l << "\n";
    std::cout << "  leaderboard: " << gen->leaderboard_json << "\n"
              << "  scenes:      " << gen->scenes_json << "\n"
              << "image root: " << gen->out_dir << "\n";
  }
  return kExitOk;
}

void PrintTable(const EvalResult& r, const Benchmark& b, int64_t show_skipped) {
  const bool pairs = r.kind == SampleKind::kPair;
  const bool valse = r.kind == SampleKind::kCaptionFoil;
  size_t width = 8;
  for (const auto& s : r.subsets) width = std::max(width, s.subset.size());
  std::string header = absl::StrFormat("%-*s %9s %8s", width, "subset", "samples", "skipped");
  if (pairs) absl::StrAppend(&header, absl::StrFormat(" %7s %7s %7s", "text", "image", "group"));
  if (valse) absl::StrAppend(&header, absl::StrFormat(" %9s", "pairwise"));
  std::cout << header << "\n" << std::string(header.size(), '-') << "\n";
  auto row = [&](const SubsetMetrics& m) {
    std::string line = absl::StrFormat("%-*s %9d %8d", width, m.subset, m.samples, m.skipped);
    if (pairs) {
      absl::StrAppend(&line, absl::StrFormat(" %6.2f%% %6.2f%% %6.2f%%", 100 * m.text_score(),
                                             100 * m.image_score(), 100 * m.group_score()));
    }
    if (valse) absl::StrAppend(&line, absl::StrFormat(" %8.2f%%", 100 * m.pairwise_accuracy()));
    std::cout << line << "\n";
  };
  for (const auto& s : r.subsets) row(s);
  if (r.subsets.size() > 1) {
    std::cout << std::string(header.size(), '-') << "\n";
    row(r.overall);
  }
  if (!r.skipped.empty()) {
    std::cout << "\n" << r.skipped.size() << " skipped:\n";
    for (int64_t i = 0; i < static_cast<int64_t>(r.skipped.size()) && i < show_skipped; ++i) {
      std::cout << "  [" << r.skipped[i].subset << " #" << r.skipped[i].index << "] "
                << r.skipped[i].reason << "\n";
    }
    if (static_cast<int64_t>(r.skipped.size()) > show_skipped) {
      std::cout << "  ... (" << r.skipped.size() - show_skipped << " more; --json lists up to "
                << 1000 << ")\n";
    }
  }
  std::cout << absl::StrFormat(
      "\n%d samples in %.1fs (%.1f samples/s); %d images and %d texts embedded%s\n",
      static_cast<int64_t>(b.samples.size()), r.seconds,
      r.seconds > 0 ? b.samples.size() / r.seconds : 0.0, r.images_embedded, r.texts_embedded,
      b.filtered_out > 0 ? absl::StrCat("; ", b.filtered_out, " entries filtered out") : "");
}

int RunEval() {
  const std::string repo = absl::GetFlag(FLAGS_repository);
  const std::string model = absl::GetFlag(FLAGS_model);
  if (repo.empty() || model.empty()) return Usage("run needs --repository and --model");
  if (absl::GetFlag(FLAGS_format).empty()) return Usage("run needs --format");
  auto format = ParseBenchmarkFormat(absl::GetFlag(FLAGS_format));
  if (!format.ok()) return Usage(std::string(format.status().message()));
  const std::string annotations = absl::GetFlag(FLAGS_annotations);
  if (annotations.empty()) return Usage("run needs --annotations FILE");
  ReadOptions ro;
  ro.image_root = absl::GetFlag(FLAGS_image_root);
  if (ro.image_root.empty() && *format != BenchmarkFormat::kValse) {
    return Usage("run needs --image-root DIR");
  }
  for (const std::string& kv : SplitList(absl::GetFlag(FLAGS_valse_root))) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == kv.size()) {
      return Usage(absl::StrCat("--valse-root: expected source=dir, got '", kv, "'"));
    }
    ro.image_roots[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  ro.subsets = SplitList(absl::GetFlag(FLAGS_subsets));
  ro.limit = absl::GetFlag(FLAGS_limit);
  if (ro.limit < 0) return Usage("--limit must be >= 0");
  ro.valse_all = absl::GetFlag(FLAGS_valse_all);
  ro.subset_name = absl::GetFlag(FLAGS_subset_name);
  EvalOptions eo;
  eo.batch_size = absl::GetFlag(FLAGS_batch_size);
  eo.threads = absl::GetFlag(FLAGS_load_threads);
  eo.chunk_size = absl::GetFlag(FLAGS_chunk_size);
  eo.max_image_bytes = absl::GetFlag(FLAGS_max_image_bytes);
  if (eo.batch_size <= 0) return Usage("--batch-size must be > 0");
  if (eo.threads <= 0) return Usage("--load-threads must be > 0");
  if (eo.chunk_size <= 0) return Usage("--chunk-size must be > 0");
  if (absl::GetFlag(FLAGS_threads) <= 0) return Usage("--threads must be > 0");
  if (absl::GetFlag(FLAGS_decode_threads) <= 0) return Usage("--decode-threads must be > 0");
  const std::string scores_out = absl::GetFlag(FLAGS_scores_out);
  eo.keep_scores = !scores_out.empty();

  auto bench = ReadBenchmark(*format, annotations, ro);
  if (!bench.ok()) return Fail(bench.status());
  std::cerr << "benchmark: " << bench->samples.size() << " samples in " << bench->subsets.size()
            << " subset(s) from " << annotations << "\n";

  int64_t version = absl::GetFlag(FLAGS_version);
  if (version < 0) return Usage("--version must be >= 0");
  if (version == 0) {
    auto versions = ListVersions(repo + "/" + model);
    if (!versions.ok()) return Fail(versions.status());
    if (versions->empty()) {
      return Fail(
          absl::NotFoundError(absl::StrCat("model '", model, "' has no version folder in ", repo)));
    }
    version = versions->back();
  }
  LoadOptions lo;
  lo.threads = absl::GetFlag(FLAGS_threads);
  auto loaded = LoadModelVersion(repo, model, version, lo);
  if (!loaded.ok()) return Fail(loaded.status());
  std::cerr << "model: " << model << " version " << version << " (" << (*loaded)->encoder->backend()
            << ", " << (*loaded)->encoder->device() << ", dim " << (*loaded)->encoder->dim()
            << ")\n";
  EncoderEmbeddingSource::Options so;
  so.max_batch_size = eo.batch_size;
  so.decode_threads = absl::GetFlag(FLAGS_decode_threads);
  auto source = EncoderEmbeddingSource::FromModel(*loaded, so);
  if (!source.ok()) return Fail(source.status());

  ProgressBar bar("evaluate", absl::GetFlag(FLAGS_progress));
  eo.progress = [&](int64_t done, int64_t total) { bar.Update(done, total); };
  auto result = Evaluate(*bench, **source, eo);
  if (!result.ok()) return Fail(result.status());
  if (!scores_out.empty()) {
    absl::Status st = WriteScoresNpy(scores_out, result->kind, result->scores);
    if (!st.ok()) return Fail(st);
    std::cerr << "scores: " << scores_out << "\n";
  }
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::ordered_json j;
    j["model"] = model;
    j["version"] = version;
    j["annotations"] = annotations;
    j["samples"] = bench->samples.size();
    j["filtered_out"] = bench->filtered_out;
    j["result"] = nlohmann::ordered_json::parse(EvalResultToJson(*result));
    if (!scores_out.empty()) j["scores_out"] = scores_out;
    std::cout << j.dump(2) << "\n";
  } else {
    PrintTable(*result, *bench, absl::GetFlag(FLAGS_show_skipped));
  }
  return kExitOk;
}

}  // namespace
}  // namespace eqsim

int main(int argc, char** argv) {
  const std::vector<std::string> args = eqsim::ParseProgramFlags(argc, argv,
      "EqBen-style evaluation of eqsim models, and the Fashion-MNIST minimal-change benchmark.\n"
      "  eqsim-eval generate --out DIR [--per-subset 500] [--seed 7] [--subsets a,b]\n"
      "  eqsim-eval run --repository R --model M [--version V] --format FORMAT\n"
      "                 --annotations F --image-root D [--valse-root src=dir,...]\n"
      "                 [--subsets a,b] [--limit N] [--scores-out f.npy] [--batch-size 64]\n"
      "                 [--threads 2] [--json]\n"
      "FORMAT: winoground | eqben-pairs | eqben-video | eqben-ag | eqben-leaderboard | valse\n"
      "Exit codes: 0 ok, 1 failure, 2 usage error.",
      "eqsim_eval_main");
  if (args.size() != 2) {
    return eqsim::Usage(args.size() < 2 ? "missing command (generate or run)"
                                        : absl::StrCat("unexpected argument '", args[2], "'"));
  }
  const std::string cmd = args[1];
  if (cmd == "generate") return eqsim::Generate();
  if (cmd == "run") return eqsim::RunEval();
  return eqsim::Usage(absl::StrCat("unknown command '", cmd, "' (expected generate or run)"));
}
