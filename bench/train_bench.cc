// Training and encoding throughput of the default native model on this machine (plain driver).
//   eqsim-train-bench [--steps 30] [--batch_size <trainer default>] [--threads 0] [--json]
// Prints: the BLAS library mapped into the process and LibTorch's thread count, training
// steps/s and samples/s at the default batch (the real trainer: data producer thread included),
// and inference images/s and texts/s at batch 64.
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "model/data/fashion_mnist.h"
#include "model/image/preprocess.h"
#include "model/nn/native_model.h"
#include "model/text/word_tokenizer.h"
#include "model/train/data_source.h"
#include "model/train/trainer.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(int64_t, steps, 30, "Training steps to time (after 3 warm-up steps)");
ABSL_FLAG(int32_t, batch_size, 0, "Training batch (0 = the trainer's default)");
ABSL_FLAG(int32_t, encode_batch, 64, "Inference batch");
ABSL_FLAG(int32_t, encode_batches, 20, "Inference batches to time");
ABSL_FLAG(int32_t, threads, 0, "LibTorch threads (0 = all CPUs)");
ABSL_FLAG(bool, eqsim, false, "Time training with the released EqSim recipe");
ABSL_FLAG(bool, json, false, "Print the results as JSON");

namespace {

// Shared libraries of interest mapped into this process (BLAS, OpenMP, oneDNN).
std::set<std::string> MappedLibraries() {
  std::set<std::string> libs;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string base = path.substr(path.rfind('/') + 1);
    for (const char* key : {"openblas", "blas", "mkl", "gomp", "iomp", "dnnl", "lapack"}) {
      if (absl::StrContains(base, key)) libs.insert(path);
    }
  }
  return libs;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int threads = absl::GetFlag(FLAGS_threads) > 0
                          ? absl::GetFlag(FLAGS_threads)
                          : static_cast<int>(std::thread::hardware_concurrency());
  eqsim::TrainOptions o;
  if (absl::GetFlag(FLAGS_batch_size) > 0) o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.threads = threads;
  o.progress = false;
  o.heldout_scenes = 0;
  if (absl::GetFlag(FLAGS_eqsim)) o.eqsim = eqsim::EqSimOptions::Released();
  nlohmann::json out;

  // Training: warm-up run, then the timed one (both through the real trainer).
  o.steps = 3;
  auto warm = eqsim::Train(o);
  if (!warm.ok()) {
    std::cerr << "train-bench: " << warm.status().message() << "\n";
    return 1;
  }
  o.steps = absl::GetFlag(FLAGS_steps);
  auto r = eqsim::Train(o);
  if (!r.ok()) {
    std::cerr << "train-bench: " << r.status().message() << "\n";
    return 1;
  }
  std::set<std::string> libs = MappedLibraries();
  bool openblas = false;
  for (const auto& l : libs) openblas |= absl::StrContains(l, "openblas");
  out["blas_libraries"] = libs;
  out["openblas"] = openblas;
  out["torch_threads"] = at::get_num_threads();
  out["torch_interop_threads"] = at::get_num_interop_threads();
  out["torch_parallel_info"] = at::get_parallel_info();
  out["train"] = {{"batch_size", o.batch_size},     {"steps", r->steps_this_run},
                  {"steps_per_s", r->steps_per_s},  {"samples_per_s", r->samples_per_s},
                  {"data_wait_s", r->data_wait_s},  {"seconds", r->seconds},
                  {"parameters", r->parameters},    {"eqsim", o.eqsim.any()}};

  // Inference: the default model, batches of real scenes.
  auto cfg = eqsim::ModelConfigFromOptions(o);
  auto test = eqsim::LoadFashionMnist(eqsim::FashionMnistSplit::kTest);
  if (!cfg.ok() || !test.ok()) {
    std::cerr << "train-bench: " << (cfg.ok() ? test.status() : cfg.status()).message() << "\n";
    return 1;
  }
  auto words = eqsim::WordTokenizer::BuildVocabulary(eqsim::SceneVocabularyCorpus());
  auto tok = eqsim::WordTokenizer::FromVocabulary(words, cfg->tokenizer().context_length());
  auto model = eqsim::BuildNativeModel(*cfg, tok->vocab_size(), 1);
  auto pre = eqsim::ImagePreprocessor::Create(cfg->image());
  if (!model.ok() || !pre.ok()) {
    std::cerr << "train-bench: cannot build the model\n";
    return 1;
  }
  auto enc = eqsim::MakeNativeEncoder(*model, torch::kCPU);
  const int eb = absl::GetFlag(FLAGS_encode_batch);
  eqsim::HeldOutScenes scenes = eqsim::MakeHeldOutScenes(*test, eb, 7);
  std::vector<eqsim::ImageTensor> ts;
  for (const auto& m : scenes.images) ts.push_back(pre->FromRgb(m));
  std::vector<const eqsim::ImageTensor*> ptrs;
  for (const auto& t : ts) ptrs.push_back(&t);
  eqsim::ImageBatch images = eqsim::StackImages(ptrs);
  auto tokens = tok->EncodeBatch(scenes.captions);
  if (!tokens.ok() || !enc->EncodeImages(images).ok() || !enc->EncodeTexts(*tokens).ok()) {
    std::cerr << "train-bench: warm-up encode failed\n";
    return 1;
  }
  const int nb = absl::GetFlag(FLAGS_encode_batches);
  double t0 = Now();
  for (int i = 0; i < nb; ++i) (void)enc->EncodeImages(images);
  const double img_s = Now() - t0;
  t0 = Now();
  for (int i = 0; i < nb; ++i) (void)enc->EncodeTexts(*tokens);
  const double txt_s = Now() - t0;
  out["encode"] = {{"batch", eb},
                   {"images_per_s", eb * nb / img_s},
                   {"texts_per_s", eb * nb / txt_s},
                   {"image_batch_ms", 1000 * img_s / nb},
                   {"text_batch_ms", 1000 * txt_s / nb}};

  if (absl::GetFlag(FLAGS_json)) {
    std::cout << out.dump(2) << std::endl;
    return 0;
  }
  std::cout << "BLAS: " << (openblas ? "OpenBLAS" : "not OpenBLAS") << " (";
  bool first = true;
  for (const auto& l : libs) {
    std::cout << (first ? "" : ", ") << l;
    first = false;
  }
  std::cout << ")\nLibTorch threads: " << at::get_num_threads() << " intra-op, "
            << at::get_num_interop_threads() << " inter-op\n";
  std::cout << absl::StrFormat(
      "train (default model, %d parameters, batch %d%s): %.2f steps/s, %.0f samples/s, data "
      "wait %.2fs of %.1fs\n",
      r->parameters, o.batch_size, o.eqsim.any() ? ", eqsim" : "", r->steps_per_s,
      r->samples_per_s, r->data_wait_s, r->seconds);
  std::cout << absl::StrFormat("encode (batch %d): %.0f images/s (%.1f ms/batch), %.0f texts/s (%.1f ms/batch)\n",
                               eb, eb * nb / img_s, 1000 * img_s / nb, eb * nb / txt_s,
                               1000 * txt_s / nb);
  return 0;
}
