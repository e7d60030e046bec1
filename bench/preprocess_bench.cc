// Throughput of the torch-free input path: image decoding, CLIP / native preprocessing, and
// the two tokenizers. Single-threaded; the server runs these on its request threads.
//   eqsim-preprocess-bench [--benchmark_filter=...]
// The CLIP merges file is read from $EQSIM_SHARED_DIR/data/clip (default ../shared, i.e. run
// from the repository root). Numbers go to BENCHMARKS.md.
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "model/image/preprocess.h"
#include "model/text/clip_bpe.h"
#include "model/text/word_tokenizer.h"
#include "opencv2/imgcodecs.hpp"
#include "opencv2/imgproc.hpp"

namespace eqsim {
namespace {

// A photo-like image: smooth colour fields plus mild noise (compresses like a real photo).
cv::Mat PhotoLike(int w, int h) {
  cv::Mat m(h, w, CV_8UC3);
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> noise(-6, 6);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        const double v = 128 + 100 * std::sin(x * (0.01 + 0.004 * c)) * std::cos(y * 0.013);
        m.at<cv::Vec3b>(y, x)[c] = cv::saturate_cast<uint8_t>(v + noise(rng));
      }
  return m;
}

std::string Encoded(const std::string& ext, int w, int h) {
  cv::Mat bgr;
  cv::cvtColor(PhotoLike(w, h), bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> buf;
  cv::imencode(ext, bgr, buf, {cv::IMWRITE_JPEG_QUALITY, 90});
  return std::string(buf.begin(), buf.end());
}

void BM_Decode(benchmark::State& state, std::string ext) {
  const std::string bytes =
      Encoded(ext, static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  for (auto _ : state) {
    auto rgb = DecodeImageRgb(bytes);
    if (!rgb.ok()) state.SkipWithError("decode failed");
    benchmark::DoNotOptimize(rgb);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes.size()));
}
BENCHMARK_CAPTURE(BM_Decode, jpeg, std::string(".jpg"))
    ->Args({640, 480})->Args({1920, 1080})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Decode, png, std::string(".png"))
    ->Args({64, 64})->Args({640, 480})->Unit(benchmark::kMillisecond);

void BM_Preprocess(benchmark::State& state, config::ImagePreprocess::Recipe recipe) {
  config::ImagePreprocess cfg;
  cfg.set_recipe(recipe);
  auto pre = ImagePreprocessor::Create(cfg);
  const cv::Mat rgb = PhotoLike(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  for (auto _ : state) benchmark::DoNotOptimize(pre->FromRgb(rgb));
  state.SetItemsProcessed(state.iterations());
  const std::string d = pre->Describe();
  state.SetLabel(d.substr(0, d.find(" mean")));
}
BENCHMARK_CAPTURE(BM_Preprocess, clip, config::ImagePreprocess::CLIP)
    ->Args({224, 224})->Args({640, 480})->Args({1920, 1080})->Args({4000, 3000})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Preprocess, native, config::ImagePreprocess::NATIVE)
    ->Args({64, 64})->Args({640, 480})->Unit(benchmark::kMillisecond);

const std::vector<std::string>& Captions() {
  static const auto* c = new std::vector<std::string>{
      "a photo of a cat", "two red bags and a blue sneaker to the left of a white shirt",
      "the person is cutting the onion, then puts it in the pan",
      "It's raining; they're not going out.", "café crème brûlée", "日本語のテキスト"};
  return *c;
}

void BM_ClipTokenizer(benchmark::State& state) {
  const char* shared = std::getenv("EQSIM_SHARED_DIR");
  auto tok = ClipBpeTokenizer::Load(std::string(shared ? shared : "../shared") +
                                    "/data/clip/bpe_simple_vocab_16e6.txt.gz");
  if (!tok.ok()) {
    state.SkipWithError("CLIP merges file not found: set EQSIM_SHARED_DIR");
    return;
  }
  // range(0) == 1: three unseen words per caption (BPE cache misses); 0: cache hits.
  const bool miss = state.range(0) == 1;
  std::mt19937 rng(1);
  size_t i = 0;
  for (auto _ : state) {
    std::string text = Captions()[i++ % Captions().size()];
    if (miss) {
      state.PauseTiming();
      for (int k = 0; k < 3; ++k) {
        text += ' ';
        for (int l = 0; l < 7; ++l) text += static_cast<char>('a' + rng() % 26);
      }
      state.ResumeTiming();
    }
    benchmark::DoNotOptimize((*tok)->Encode(text));
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(miss ? "3 unseen words per caption" : "cached words");
}
BENCHMARK(BM_ClipTokenizer)->Arg(0)->Arg(1);

void BM_WordTokenizer(benchmark::State& state) {
  auto tok = WordTokenizer::FromVocabulary(WordTokenizer::BuildVocabulary(Captions()));
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(tok->Encode(Captions()[i++ % Captions().size()]));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_WordTokenizer);

}  // namespace
}  // namespace eqsim

BENCHMARK_MAIN();
