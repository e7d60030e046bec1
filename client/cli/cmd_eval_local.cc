// eqsim eval-local: evaluate a benchmark stored on this machine with a remote model.
#include <algorithm>
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

ABSL_FLAG(int32_t, shard_index, 0,
          "eval-local: evaluate only shard I of --num-shards (0-based; e.g. a Kubernetes "
          "Indexed Job's $JOB_COMPLETION_INDEX)");
ABSL_FLAG(int32_t, num_shards, 1,
          "eval-local: split the samples (after --subsets / --limit) into this many contiguous "
          "shards: shard I holds samples [floor(I*total/N), floor((I+1)*total/N))");

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

// Keeps samples [begin, end) of `bench` (file order after filtering) and recomputes the
// subset list. Sample::index (the entry index in the file) is kept, so skipped entries are
// reported with the same numbers as in an unsharded run.
void KeepSlice(Benchmark& bench, int64_t begin, int64_t end) {
  bench.filtered_out += static_cast<int64_t>(bench.samples.size()) - (end - begin);
  bench.samples.erase(bench.samples.begin() + end, bench.samples.end());
  bench.samples.erase(bench.samples.begin(), bench.samples.begin() + begin);
  bench.subsets.clear();
  for (const Sample& s : bench.samples) {
    if (bench.subsets.empty() || bench.subsets.back() != s.subset) {
      if (std::find(bench.subsets.begin(), bench.subsets.end(), s.subset) == bench.subsets.end())
        bench.subsets.push_back(s.subset);
    }
  }
}

nlohmann::json CountsJson(const SubsetMetrics& m) {
  return {{"text_correct", m.text_correct},
          {"image_correct", m.image_correct},
          {"group_correct", m.group_correct},
          {"pairwise_correct", m.pairwise_correct}};
}

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
  const int64_t shard_index = absl::GetFlag(FLAGS_shard_index);
  const int64_t num_shards = absl::GetFlag(FLAGS_num_shards);
  if (num_shards < 1) {
    return Fail(cmd, absl::InvalidArgumentError(absl::StrCat(
                         "--num-shards must be at least 1, got ", num_shards)),
                kExitUsage);
  }
  if (shard_index < 0 || shard_index >= num_shards) {
    return Fail(cmd, absl::InvalidArgumentError(absl::StrCat(
                         "--shard-index must be in [0, ", num_shards, ") for --num-shards=",
                         num_shards, ", got ", shard_index)),
                kExitUsage);
  }
  auto bench = ReadBenchmark(*format, absl::GetFlag(FLAGS_annotation), ro);
  if (!bench.ok()) return Fail(cmd, bench.status(), kExitUsage);
  // Contiguous shards in sample order: every sample in exactly one shard, sizes differ by at
  // most one, a shard may be empty when there are fewer samples than shards.
  const int64_t total_samples = static_cast<int64_t>(bench->samples.size());
  const int64_t shard_begin = total_samples * shard_index / num_shards;
  const int64_t shard_end = total_samples * (shard_index + 1) / num_shards;
  if (num_shards > 1) KeepSlice(*bench, shard_begin, shard_end);

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
  const std::string shard_text =
      num_shards > 1 ? absl::StrFormat("shard %d of %d (samples [%d, %d) of %d), ", shard_index,
                                       num_shards, shard_begin, shard_end, total_samples)
                     : "";
  if (!JsonOutput()) {
    std::fprintf(stderr, "eval-local: %s%zu samples in %zu subsets from %s, %d target(s)\n",
                 shard_text.c_str(), bench->samples.size(), bench->subsets.size(),
                 bench->annotation_path.c_str(), (*client)->num_endpoints());
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
  if (source.items_embedded() == 0) {
    // Nothing was embedded (an empty shard, or every sample skipped): ask the server which
    // model version it serves with one tiny text, so that every shard names the same model.
    auto probe = source.EmbedTexts({"a"});
    if (!probe.ok()) return Fail(cmd, probe.status(), kExitRpcError);
  }
  const ModelSelector served = source.served_model();
  if (JsonOutput()) {
    nlohmann::json j = nlohmann::json::parse(EvalResultToJson(*result), nullptr, false);
    if (j.is_discarded()) j = nlohmann::json::object();
    j["model"] = served.name;
    j["version"] = served.version;
    j["targets"] = (*client)->options().targets;
    // Exact counts next to the fractions, so that shards merge without rounding.
    if (j["subsets"].is_array() && j["subsets"].size() == result->subsets.size()) {
      for (size_t k = 0; k < result->subsets.size(); ++k)
        j["subsets"][k].update(CountsJson(result->subsets[k]));
    }
    if (j["overall"].is_object()) j["overall"].update(CountsJson(result->overall));
    j["shard"] = {{"index", shard_index},
                  {"num_shards", num_shards},
                  {"samples_begin", shard_begin},
                  {"samples_end", shard_end},
                  {"samples_total", total_samples}};
    std::printf("%s\n", j.dump().c_str());
    return kExitOk;
  }
  const bool valse = result->kind == SampleKind::kCaptionFoil;
  const bool single = result->kind == SampleKind::kSingle;
  std::printf("model %s v%lld, %s, %s%.1fs, %lld images + %lld texts embedded\n",
              served.name.c_str(), static_cast<long long>(served.version),
              BenchmarkFormatName(result->format).c_str(), shard_text.c_str(),
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
           "--target a:8500 --target b:8500\nSharding (e.g. a Kubernetes Indexed Job): "
           "--shard-index=I --num-shards=N evaluates the contiguous slice [floor(I*total/N), "
           "floor((I+1)*total/N)) of the samples in file order (after --subsets / --limit); "
           "--json then carries per-subset counts (text_correct, image_correct, "
           "group_correct, pairwise_correct) and a \"shard\" record, and "
           "deploy/jobs/eval-sharded/merge_shards.py adds the shards up to exactly the "
           "unsharded result. --scores-output holds the shard's samples only.",
           {"format", "annotation", "image_root", "image_roots", "subsets", "limit", "valse_all",
            "subset_name", "batch_size", "loader_threads", "max_items_per_request",
            "concurrency", "scores_output", "shard_index", "num_shards", "model",
            "model_version"},
           RunEvalLocal}};
}

}  // namespace eqsim::cli
