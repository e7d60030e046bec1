// eqsim eval-local: evaluate a benchmark stored on this machine with a remote model.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"
#include "client/cli/remote_source.h"
#include "model/bench/evaluator.h"
#include "model/bench/readers.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(int64_t, batch_size, 256,
          "eval-local: items handed to the remote model at a time (split into requests of "
          "--max-items-per-request, --concurrency in flight over all targets)");
ABSL_FLAG(int32_t, loader_threads, 2, "eval-local: threads reading and decoding image files");
ABSL_FLAG(std::string, subset_name, "",
          "eval-local, EqBen pairs/video/AG: subset name (default: the annotation's file stem)");

ABSL_DECLARE_FLAG(std::string, format);
ABSL_DECLARE_FLAG(std::string, annotation);
ABSL_DECLARE_FLAG(std::string, image_root);
ABSL_DECLARE_FLAG(std::vector<std::string>, image_roots);
ABSL_DECLARE_FLAG(std::vector<std::string>, subsets);
ABSL_DECLARE_FLAG(int64_t, limit);
ABSL_DECLARE_FLAG(bool, valse_all);
ABSL_DECLARE_FLAG(std::string, scores_output);
ABSL_DECLARE_FLAG(int32_t, max_items_per_request);
ABSL_DECLARE_FLAG(int32_t, concurrency);

namespace eqsim::cli {
namespace {

int RunEvalLocal(const ParsedArgs& args) {
  const std::string cmd = "eval-local";
  if (!args.positional.empty()) {
    return Fail(cmd, absl::InvalidArgumentError(absl::StrCat("unexpected argument '",
                                                             args.positional[0], "'")),
                kExitUsage);
  }
  auto format = ParseBenchmarkFormat(absl::GetFlag(FLAGS_format));
  if (!format.ok()) return Fail(cmd, format.status(), kExitUsage);
  if (absl::GetFlag(FLAGS_annotation).empty()) {
    return Fail(cmd, absl::InvalidArgumentError("--annotation is required"), kExitUsage);
  }
  ReadOptions ro;
  ro.image_root = absl::GetFlag(FLAGS_image_root);
  for (const std::string& kv : absl::GetFlag(FLAGS_image_roots)) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty() || p.second.empty()) {
      return Fail(cmd, absl::InvalidArgumentError(absl::StrCat(
                           "--image-roots entry '", kv, "' is not dataset=root")),
                  kExitUsage);
    }
    ro.image_roots[p.first] = p.second;
  }
  ro.subsets = absl::GetFlag(FLAGS_subsets);
  ro.limit = absl::GetFlag(FLAGS_limit);
  ro.valse_all = absl::GetFlag(FLAGS_valse_all);
  ro.subset_name = absl::GetFlag(FLAGS_subset_name);
  if (ro.limit < 0) return Fail(cmd, absl::InvalidArgumentError("--limit must be >= 0"), kExitUsage);
  auto bench = ReadBenchmark(*format, absl::GetFlag(FLAGS_annotation), ro);
  if (!bench.ok()) return Fail(cmd, bench.status(), kExitUsage);

  auto o = ClientOptionsFromFlags();
  if (!o.ok()) return Fail(cmd, o.status(), kExitUsage);
  o->max_items_per_request = absl::GetFlag(FLAGS_max_items_per_request);
  o->max_concurrency = absl::GetFlag(FLAGS_concurrency);
  auto client = Client::Create(*std::move(o));
  if (!client.ok()) return Fail(cmd, client.status(), kExitUsage);
  RemoteEmbeddingSource source(client->get(), ModelFromFlags());

  const std::string scores_out = absl::GetFlag(FLAGS_scores_output);
  EvalOptions eo;
  eo.batch_size = absl::GetFlag(FLAGS_batch_size);
  eo.threads = absl::GetFlag(FLAGS_loader_threads);
  if (eo.batch_size <= 0 || eo.threads <= 0) {
    return Fail(cmd, absl::InvalidArgumentError("--batch-size and --loader-threads must be positive"),
                kExitUsage);
  }
  eo.keep_scores = !scores_out.empty();
  ProgressBar bar("eval-local");
  eo.progress = [&](int64_t done, int64_t total) {
    bar.Update(done, total, absl::StrCat(source.items_embedded(), " items embedded"));
  };
  if (!JsonOutput()) {
    std::fprintf(stderr, "eval-local: %zu samples in %zu subsets from %s, %d target(s)\n",
                 bench->samples.size(), bench->subsets.size(), bench->annotation_path.c_str(),
                 (*client)->num_endpoints());
  }
  auto result = Evaluate(*bench, source, eo);
  bar.Finish();
  if (!result.ok()) {
    // Local data problems are InvalidArgument / NotFound from the readers; the rest is remote.
    return Fail(cmd, result.status(), kExitRpcError);
  }
  if (!scores_out.empty()) {
    absl::Status s = WriteScoresNpy(scores_out, result->kind, result->scores);
    if (!s.ok()) return Fail(cmd, s, kExitUsage);
  }
  const ModelSelector served = source.served_model();
  if (JsonOutput()) {
    nlohmann::json j = nlohmann::json::parse(EvalResultToJson(*result), nullptr, false);
    if (j.is_discarded()) j = nlohmann::json::object();
    j["model"] = served.name;
    j["version"] = served.version;
    j["targets"] = (*client)->options().targets;
    std::printf("%s\n", j.dump().c_str());
    return kExitOk;
  }
  const bool valse = result->kind == SampleKind::kCaptionFoil;
  const bool single = result->kind == SampleKind::kSingle;
  std::printf("model %s v%lld, %s, %.1fs, %lld images + %lld texts embedded\n", served.name.c_str(),
              static_cast<long long>(served.version), BenchmarkFormatName(result->format).c_str(),
              result->seconds, static_cast<long long>(result->images_embedded),
              static_cast<long long>(result->texts_embedded));
  std::printf("  %-28s %8s %8s%s\n", "subset", "samples", "skipped",
              valse ? "  pairwise%" : single ? "" : "    text%   image%   group%");
  auto row = [&](const SubsetMetrics& m, const std::string& name) {
    std::printf("  %-28s %8lld %8lld", name.c_str(), static_cast<long long>(m.samples),
                static_cast<long long>(m.skipped));
    if (valse) {
      std::printf("  %6.2f\n", 100 * m.pairwise_accuracy());
    } else if (!single) {
      std::printf("  %6.2f   %6.2f   %6.2f\n", 100 * m.text_score(), 100 * m.image_score(),
                  100 * m.group_score());
    } else {
      std::printf("\n");
    }
  };
  for (const auto& m : result->subsets) row(m, m.subset);
  row(result->overall, "overall");
  for (size_t i = 0; i < result->skipped.size() && i < 10; ++i)
    std::printf("  skipped %s #%lld: %s\n", result->skipped[i].subset.c_str(),
                static_cast<long long>(result->skipped[i].index), result->skipped[i].reason.c_str());
  if (!scores_out.empty()) std::printf("scores written to %s\n", scores_out.c_str());
  return kExitOk;
}

}  // namespace

std::vector<Command> EvalLocalCommands() {
  return {{"eval-local", "",
           "Evaluate a benchmark stored on this machine with the served model (Embed RPCs, "
           "sharded over all targets)",
           "Reads the annotation and images locally, embeds every distinct image and caption "
           "once through the server(s) and computes the text / image / group scores here; the "
           "numbers equal a server-side `eval submit` of the same data.\nExample: eqsim "
           "eval-local --format winoground --annotation wino.jsonl --image-root images "
           "--target a:8500 --target b:8500",
           {"format", "annotation", "image_root", "image_roots", "subsets", "limit", "valse_all",
            "subset_name", "batch_size", "loader_threads", "max_items_per_request",
            "concurrency", "scores_output", "model", "model_version"},
           RunEvalLocal}};
}

}  // namespace eqsim::cli
