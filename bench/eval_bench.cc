// Evaluation throughput: the generated Fashion-MNIST minimal-change benchmark scored in-process
// by a native model (a trained one from --repository/--model, or a randomly initialised one of
// the default architecture: throughput does not depend on the weights).
//
//   eqsim-eval-bench [--per-subset 100] [--batch-sizes 16,64,128] [--threads 2]
//                    [--load-threads 2] [--decode-threads 2] [--repository R --model M]
//
// Prints one JSON object per configuration and a summary object (plain driver; no timing
// assertions anywhere).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "model/bench/encoder_source.h"
#include "model/bench/evaluator.h"
#include "model/bench/generator.h"
#include "model/bench/readers.h"
#include "model/core/status_macros.h"
#include "model/nn/native_init.h"
#include "model/repo/repository.h"
#include "model/text/word_tokenizer.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(int64_t, per_subset, 100, "generated samples per subset (4 subsets)");
ABSL_FLAG(std::string, bench_dir, "", "use this generated benchmark instead of generating one");
ABSL_FLAG(std::string, repository, "", "model repository (default: a random native model)");
ABSL_FLAG(std::string, model, "", "model name in --repository");
ABSL_FLAG(int64_t, version, 0, "model version (0 = newest)");
ABSL_FLAG(std::string, batch_sizes, "16,64,128", "encoder batch sizes to measure");
ABSL_FLAG(int32_t, threads, 2, "LibTorch intra-op threads");
ABSL_FLAG(int32_t, load_threads, 2, "image file reader threads");
ABSL_FLAG(int32_t, decode_threads, 2, "image decode + preprocess threads");
ABSL_FLAG(std::string, format, "winoground",
          "layout to evaluate: winoground or eqben-leaderboard (4x the entries, same images)");
ABSL_FLAG(std::string, work_dir, "", "scratch folder (default: a fresh one under /tmp)");

namespace eqsim {
namespace {

int Die(const absl::Status& s) {
  std::cerr << "eval_bench: " << s << "\n";
  return 1;
}

absl::Status MakeRandomNativeModel(const std::string& repo,
                                   const std::vector<std::string>& corpus) {
  // The default native architecture (model_config.proto defaults) at the NATIVE 64x64 recipe.
  EQSIM_ASSIGN_OR_RETURN(config::ModelConfig cfg,
                         ParseModelConfig(R"pb(name: "bench"
                                               backend: NATIVE
                                               embed_dim: 128
                                               image { recipe: NATIVE }
                                               tokenizer { kind: WORD vocab_file: "vocab.txt" }
                                               device: CPU
                                          )pb",
                                          "eval_bench config"));
  EQSIM_RETURN_IF_ERROR(WriteModelConfig(cfg, repo + "/bench/config.pbtxt"));
  auto tok = WordTokenizer::FromVocabulary(WordTokenizer::BuildVocabulary(corpus));
  EQSIM_RETURN_IF_ERROR(tok->Save(repo + "/bench/vocab.txt"));
  return WriteInitialNativeWeights(cfg, tok->vocab_size(), 1, repo + "/bench/1");
}

int Main() {
  std::string work = absl::GetFlag(FLAGS_work_dir);
  if (work.empty()) {
    std::string tmpl = "/tmp/eqsim_eval_bench_XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) return Die(absl::InternalError("mkdtemp failed"));
    work = tmpl;
  }
  std::string bench_dir = absl::GetFlag(FLAGS_bench_dir);
  if (bench_dir.empty()) {
    bench_dir = work + "/bench";
    GeneratorOptions g;
    g.out_dir = bench_dir;
    g.per_subset = absl::GetFlag(FLAGS_per_subset);
    auto gen = GenerateBenchmark(g);
    if (!gen.ok()) return Die(gen.status());
  }
  auto format = ParseBenchmarkFormat(absl::GetFlag(FLAGS_format));
  if (!format.ok()) return Die(format.status());
  const std::string ann =
      bench_dir + (*format == BenchmarkFormat::kEqbenLeaderboard ? "/annotations/leaderboard.json"
                                                                 : "/annotations/winoground.jsonl");
  ReadOptions ro;
  ro.image_root = bench_dir;
  auto bench = ReadBenchmark(*format, ann, ro);
  if (!bench.ok()) return Die(bench.status());

  std::string repo = absl::GetFlag(FLAGS_repository);
  std::string model = absl::GetFlag(FLAGS_model);
  if (repo.empty()) {
    repo = work + "/repo";
    model = "bench";
    std::vector<std::string> corpus;
    for (const auto& s : bench->samples)
      corpus.insert(corpus.end(), s.captions.begin(), s.captions.end());
    absl::Status st = MakeRandomNativeModel(repo, corpus);
    if (!st.ok()) return Die(st);
  }
  int64_t version = absl::GetFlag(FLAGS_version);
  if (version == 0) {
    auto versions = ListVersions(repo + "/" + model);
    if (!versions.ok()) return Die(versions.status());
    if (versions->empty()) return Die(absl::NotFoundError("no model version"));
    version = versions->back();
  }
  LoadOptions lo;
  lo.threads = absl::GetFlag(FLAGS_threads);
  auto loaded = LoadModelVersion(repo, model, version, lo);
  if (!loaded.ok()) return Die(loaded.status());

  nlohmann::ordered_json summary = nlohmann::ordered_json::array();
  for (absl::string_view bs_str : absl::StrSplit(absl::GetFlag(FLAGS_batch_sizes), ',')) {
    int64_t bs = 0;
    if (!absl::SimpleAtoi(bs_str, &bs) || bs <= 0) {
      return Die(absl::InvalidArgumentError(absl::StrCat("bad batch size '", bs_str, "'")));
    }
    EncoderEmbeddingSource::Options so;
    so.max_batch_size = bs;
    so.decode_threads = absl::GetFlag(FLAGS_decode_threads);
    auto source = EncoderEmbeddingSource::FromModel(*loaded, so);
    if (!source.ok()) return Die(source.status());
    EvalOptions eo;
    eo.batch_size = bs;
    eo.threads = absl::GetFlag(FLAGS_load_threads);
    auto r = Evaluate(*bench, **source, eo);
    if (!r.ok()) return Die(r.status());
    nlohmann::ordered_json j;
    j["format"] = BenchmarkFormatName(*format);
    j["model"] = model;
    j["backend"] = (*loaded)->encoder->backend();
    j["device"] = (*loaded)->encoder->device();
    j["batch_size"] = bs;
    j["torch_threads"] = absl::GetFlag(FLAGS_threads);
    j["load_threads"] = eo.threads;
    j["decode_threads"] = so.decode_threads;
    j["samples"] = bench->samples.size();
    j["images_embedded"] = r->images_embedded;
    j["texts_embedded"] = r->texts_embedded;
    j["seconds"] = r->seconds;
    j["samples_per_second"] = bench->samples.size() / r->seconds;
    j["images_per_second"] = r->images_embedded / r->seconds;
    j["group_score"] = r->overall.group_score();
    std::cout << j.dump() << std::endl;
    summary.push_back(j);
  }
  std::cout << nlohmann::ordered_json{{"summary", summary}}.dump(2) << std::endl;
  if (absl::GetFlag(FLAGS_work_dir).empty()) {
    const std::string cmd = "rm -rf '" + work + "'";
    if (std::system(cmd.c_str()) != 0)
      std::cerr << "eval_bench: cleanup of " << work << " failed\n";
  }
  return 0;
}

}  // namespace
}  // namespace eqsim

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return eqsim::Main();
}
