#include "model/bench/evaluator.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "model/core/status_macros.h"
#include "model/image/npy.h"
#include "nlohmann/json.hpp"

namespace eqsim {

EmbeddingSource::~EmbeddingSource() = default;

absl::StatusOr<ImageTensor> EmbeddingSource::PreprocessImage(const std::string&) const {
  return absl::UnimplementedError("this embedding source does not preprocess images itself");
}

absl::StatusOr<Matrix> EmbeddingSource::EmbedPreprocessedImages(
    const std::vector<const ImageTensor*>&) {
  return absl::UnimplementedError("this embedding source does not preprocess images itself");
}

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A fixed pool of worker threads running queued closures.
class WorkerPool {
 public:
  explicit WorkerPool(int threads) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Run(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  void Submit(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }

 private:
  void Run() {
    while (true) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stop_ and drained
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// One batch of images being read by the pool.
struct LoadBatch {
  std::vector<int32_t> ids;
  std::vector<std::string> bytes;
  std::vector<ImageTensor> tensors;  // when the source preprocesses on the loader threads
  std::vector<std::string> errors;   // non-empty: the load failed
  std::mutex mu;
  std::condition_variable cv;
  size_t remaining = 0;

  void Wait() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [this] { return remaining == 0; });
  }
};

int ImagesPerSample(SampleKind kind) { return kind == SampleKind::kPair ? 2 : 1; }
int TextsPerSample(SampleKind kind) { return kind == SampleKind::kSingle ? 1 : 2; }

const char* ImageRole(SampleKind kind, int k) {
  if (kind == SampleKind::kPair) return k == 0 ? "image0" : "image1";
  return "image";
}
const char* TextRole(SampleKind kind, int k) {
  switch (kind) {
    case SampleKind::kPair:
      return k == 0 ? "caption0" : "caption1";
    case SampleKind::kCaptionFoil:
      return k == 0 ? "caption" : "foil";
    case SampleKind::kSingle:
      return "caption";
  }
  return "caption";
}

std::string Shorten(const std::string& s) {
  constexpr size_t kMax = 80;
  if (s.size() <= kMax) return s;
  return s.substr(0, kMax) + "...";
}

// "item 0: image is truncated" -> "image is truncated" (one-item retries of a source that
// prefixes the item index).
std::string StripItemPrefix(std::string msg) {
  for (const char* p : {"item 0: ", "text 0: ", "image 0: "}) {
    if (absl::StartsWith(msg, p)) return msg.substr(std::strlen(p));
  }
  return msg;
}

// The distinct items of a benchmark and which samples use them.
struct Plan {
  int ni = 2, nt = 2;
  std::vector<const ImageRef*> images;
  std::vector<const std::string*> texts;
  std::vector<int32_t> sample_images;  // samples * ni, -1 for a sample skipped by the reader
  std::vector<int32_t> sample_texts;   // samples * nt
  std::vector<int64_t> image_last_use;
  std::vector<int64_t> text_last_use;
};

Plan MakePlan(const Benchmark& b) {
  Plan p;
  p.ni = ImagesPerSample(b.kind);
  p.nt = TextsPerSample(b.kind);
  const int64_t n = static_cast<int64_t>(b.samples.size());
  p.sample_images.assign(static_cast<size_t>(n * p.ni), -1);
  p.sample_texts.assign(static_cast<size_t>(n * p.nt), -1);
  absl::flat_hash_map<std::string_view, int32_t> image_ids;
  absl::flat_hash_map<std::string_view, int32_t> text_ids;
  for (int64_t s = 0; s < n; ++s) {
    const Sample& sample = b.samples[s];
    if (!sample.skip_reason.empty()) continue;
    for (int k = 0; k < p.ni; ++k) {
      const ImageRef& ref = sample.images[k];
      auto [it, inserted] =
          image_ids.try_emplace(std::string_view(ref.path), static_cast<int32_t>(p.images.size()));
      if (inserted) {
        p.images.push_back(&ref);
        p.image_last_use.push_back(s);
      }
      p.image_last_use[it->second] = s;
      p.sample_images[s * p.ni + k] = it->second;
    }
    for (int k = 0; k < p.nt; ++k) {
      const std::string& text = sample.captions[k];
      auto [it, inserted] =
          text_ids.try_emplace(std::string_view(text), static_cast<int32_t>(p.texts.size()));
      if (inserted) {
        p.texts.push_back(&text);
        p.text_last_use.push_back(s);
      }
      p.text_last_use[it->second] = s;
      p.sample_texts[s * p.nt + k] = it->second;
    }
  }
  return p;
}

absl::Status CheckBenchmarkShape(const Benchmark& b) {
  const int ni = ImagesPerSample(b.kind), nt = TextsPerSample(b.kind);
  for (size_t s = 0; s < b.samples.size(); ++s) {
    const Sample& x = b.samples[s];
    if (static_cast<int>(x.images.size()) != ni || static_cast<int>(x.captions.size()) != nt) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sample ", s, " (", x.key, ") has ", x.images.size(), " images and ", x.captions.size(),
          " captions; a ", BenchmarkFormatName(b.format), " sample needs ", ni, " and ", nt));
    }
  }
  return absl::OkStatus();
}

// Embeddings of the items of one modality, kept while a later chunk still needs them.
class EmbeddingCache {
 public:
  const float* Get(int32_t id) const {
    auto it = rows_.find(id);
    return it == rows_.end() ? nullptr : it->second.data();
  }
  const std::string* Failure(int32_t id) const {
    auto it = failures_.find(id);
    return it == failures_.end() ? nullptr : &it->second;
  }
  bool Known(int32_t id) const { return rows_.contains(id) || failures_.contains(id); }
  void Put(int32_t id, const float* row, int64_t dim) { rows_[id].assign(row, row + dim); }
  void Fail(int32_t id, std::string reason) { failures_[id] = std::move(reason); }
  void Evict(int32_t id) { rows_.erase(id); }

 private:
  absl::flat_hash_map<int32_t, std::vector<float>> rows_;
  absl::flat_hash_map<int32_t, std::string> failures_;
};

class Runner {
 public:
  Runner(const Benchmark& b, EmbeddingSource& source, const EvalOptions& options)
      : b_(b), source_(source), options_(options), plan_(MakePlan(b)) {}

  absl::StatusOr<EvalResult> Run();

 private:
  bool Cancelled() const { return options_.cancel != nullptr && options_.cancel->load(); }
  absl::Status CancelledStatus() const {
    return absl::CancelledError(absl::StrCat("evaluation cancelled after ", done_samples_, " of ",
                                             b_.samples.size(), " samples"));
  }
  void ReportProgress(int64_t chunk_begin, int64_t chunk_size, int64_t items_done,
                      int64_t items_total) {
    if (!options_.progress) return;
    int64_t done = chunk_begin;
    if (items_total > 0) done += chunk_size * items_done / items_total;
    options_.progress(std::min<int64_t>(done, b_.samples.size()),
                      static_cast<int64_t>(b_.samples.size()));
  }

  // Embeds `items` (their ids in `ids`) into `cache`, retrying one by one on InvalidArgument.
  absl::Status EmbedBatch(bool images, const std::vector<std::string>& items,
                          const std::vector<int32_t>& ids, EmbeddingCache& cache);
  absl::Status EmbedTensorBatch(const std::vector<const ImageTensor*>& tensors,
                                const std::vector<int32_t>& ids);
  absl::Status StoreRows(const Matrix& m, const std::vector<int32_t>& ids, size_t n,
                         EmbeddingCache& cache);
  absl::Status RunChunk(int64_t chunk, int64_t begin, int64_t end, ChunkResult* out);

  const Benchmark& b_;
  EmbeddingSource& source_;
  const EvalOptions& options_;
  Plan plan_;
  EmbeddingCache image_cache_, text_cache_;
  int64_t dim_ = -1;
  int64_t done_samples_ = 0;
  int64_t images_embedded_ = 0, texts_embedded_ = 0;
  std::unique_ptr<WorkerPool> pool_;
};

absl::Status Runner::StoreRows(const Matrix& m, const std::vector<int32_t>& ids, size_t n,
                               EmbeddingCache& cache) {
  if (m.rows != static_cast<int64_t>(n)) {
    return absl::InternalError(
        absl::StrCat("embedding source returned ", m.rows, " embeddings for ", n, " items"));
  }
  if (m.cols <= 0 || (dim_ >= 0 && m.cols != dim_)) {
    return absl::InternalError(absl::StrCat("embedding source returned dimension ", m.cols,
                                            dim_ >= 0 ? absl::StrCat(", earlier ", dim_) : ""));
  }
  dim_ = m.cols;
  Matrix normalised = m;
  L2NormalizeRows(normalised);
  for (size_t i = 0; i < n; ++i) cache.Put(ids[i], normalised.row(i), dim_);
  return absl::OkStatus();
}

absl::Status Runner::EmbedBatch(bool images, const std::vector<std::string>& items,
                                const std::vector<int32_t>& ids, EmbeddingCache& cache) {
  if (items.empty()) return absl::OkStatus();
  auto embed = [&](const std::vector<std::string>& x) {
    return images ? source_.EmbedImages(x) : source_.EmbedTexts(x);
  };
  auto m = embed(items);
  if (m.ok()) {
    (images ? images_embedded_ : texts_embedded_) += static_cast<int64_t>(items.size());
    return StoreRows(*m, ids, items.size(), cache);
  }
  if (m.status().code() != absl::StatusCode::kInvalidArgument) return m.status();
  // Find the culprit(s): one item at a time.
  for (size_t i = 0; i < items.size(); ++i) {
    if (Cancelled()) return CancelledStatus();
    auto one = embed({items[i]});
    if (one.ok()) {
      (images ? images_embedded_ : texts_embedded_) += 1;
      EQSIM_RETURN_IF_ERROR(StoreRows(*one, {ids[i]}, 1, cache));
    } else if (one.status().code() == absl::StatusCode::kInvalidArgument) {
      cache.Fail(ids[i], StripItemPrefix(std::string(one.status().message())));
    } else {
      return one.status();
    }
  }
  return absl::OkStatus();
}

absl::Status Runner::EmbedTensorBatch(const std::vector<const ImageTensor*>& tensors,
                                      const std::vector<int32_t>& ids) {
  if (tensors.empty()) return absl::OkStatus();
  auto m = source_.EmbedPreprocessedImages(tensors);
  if (m.ok()) {
    images_embedded_ += static_cast<int64_t>(tensors.size());
    return StoreRows(*m, ids, tensors.size(), image_cache_);
  }
  if (m.status().code() != absl::StatusCode::kInvalidArgument) return m.status();
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (Cancelled()) return CancelledStatus();
    auto one = source_.EmbedPreprocessedImages({tensors[i]});
    if (one.ok()) {
      images_embedded_ += 1;
      EQSIM_RETURN_IF_ERROR(StoreRows(*one, {ids[i]}, 1, image_cache_));
    } else if (one.status().code() == absl::StatusCode::kInvalidArgument) {
      image_cache_.Fail(ids[i], StripItemPrefix(std::string(one.status().message())));
    } else {
      return one.status();
    }
  }
  return absl::OkStatus();
}

absl::Status Runner::RunChunk(int64_t chunk, int64_t begin, int64_t end, ChunkResult* out) {
  const int ni = plan_.ni, nt = plan_.nt;
  // The items this chunk needs that are not embedded (or known bad) yet, in first-use order.
  std::vector<int32_t> need_images, need_texts;
  {
    absl::flat_hash_map<int32_t, bool> seen;
    for (int64_t s = begin; s < end; ++s) {
      for (int k = 0; k < ni; ++k) {
        const int32_t id = plan_.sample_images[s * ni + k];
        if (id >= 0 && !image_cache_.Known(id) && seen.emplace(id, true).second) {
          need_images.push_back(id);
        }
      }
    }
    seen.clear();
    for (int64_t s = begin; s < end; ++s) {
      for (int k = 0; k < nt; ++k) {
        const int32_t id = plan_.sample_texts[s * nt + k];
        if (id >= 0 && !text_cache_.Known(id) && seen.emplace(id, true).second) {
          need_texts.push_back(id);
        }
      }
    }
  }
  const int64_t items_total = static_cast<int64_t>(need_images.size() + need_texts.size());
  int64_t items_done = 0;
  const size_t bs = static_cast<size_t>(options_.batch_size);

  // Texts: cheap, embedded first.
  for (size_t start = 0; start < need_texts.size(); start += bs) {
    if (Cancelled()) return CancelledStatus();
    const size_t stop = std::min(need_texts.size(), start + bs);
    std::vector<int32_t> ids(need_texts.begin() + start, need_texts.begin() + stop);
    std::vector<std::string> texts;
    texts.reserve(ids.size());
    for (int32_t id : ids) texts.push_back(*plan_.texts[id]);
    EQSIM_RETURN_IF_ERROR(EmbedBatch(false, texts, ids, text_cache_));
    items_done += static_cast<int64_t>(ids.size());
    ReportProgress(begin, end - begin, items_done, items_total);
  }

  // Images: the pool reads (and, when the source supports it, decodes and preprocesses) files
  // `prefetch_batches` batches ahead of the encoder.
  const bool preprocess = source_.SupportsPreprocessedImages();
  std::deque<std::shared_ptr<LoadBatch>> inflight;
  size_t next = 0;
  auto submit_next = [&]() {
    if (next >= need_images.size()) return false;
    const size_t stop = std::min(need_images.size(), next + bs);
    auto batch = std::make_shared<LoadBatch>();
    batch->ids.assign(need_images.begin() + next, need_images.begin() + stop);
    batch->bytes.resize(batch->ids.size());
    batch->errors.resize(batch->ids.size());
    if (preprocess) batch->tensors.resize(batch->ids.size());
    batch->remaining = batch->ids.size();
    next = stop;
    for (size_t i = 0; i < batch->ids.size(); ++i) {
      const ImageRef* ref = plan_.images[batch->ids[i]];
      const int64_t max_bytes = options_.max_image_bytes;
      const EmbeddingSource* source = &source_;
      pool_->Submit([batch, i, ref, max_bytes, preprocess, source] {
        std::string error;
        std::string bytes_out;
        ImageTensor tensor;
        auto bytes = LoadImageBytes(*ref, max_bytes);
        if (!bytes.ok()) {
          error = std::string(bytes.status().message());
        } else if (preprocess) {
          auto t = source->PreprocessImage(*bytes);
          if (t.ok()) {
            tensor = *std::move(t);
          } else {
            error = std::string(t.status().message());
          }
        } else {
          bytes_out = *std::move(bytes);
        }
        if (!bytes.ok() && error.empty()) error = "unreadable";
        std::lock_guard<std::mutex> lock(batch->mu);
        batch->errors[i] = std::move(error);
        batch->bytes[i] = std::move(bytes_out);
        if (preprocess) batch->tensors[i] = std::move(tensor);
        if (--batch->remaining == 0) batch->cv.notify_all();
      });
    }
    inflight.push_back(std::move(batch));
    return true;
  };
  auto drain = [&]() {
    for (auto& b : inflight) b->Wait();
    inflight.clear();
  };
  const size_t window = static_cast<size_t>(std::max(0, options_.prefetch_batches)) + 1;
  while (inflight.size() < window && submit_next()) {
  }
  while (!inflight.empty()) {
    if (Cancelled()) {
      drain();
      return CancelledStatus();
    }
    std::shared_ptr<LoadBatch> batch = inflight.front();
    inflight.pop_front();
    batch->Wait();
    submit_next();
    std::vector<std::string> bytes;
    std::vector<const ImageTensor*> tensors;
    std::vector<int32_t> ids;
    for (size_t i = 0; i < batch->ids.size(); ++i) {
      if (!batch->errors[i].empty()) {
        image_cache_.Fail(batch->ids[i], batch->errors[i]);
        continue;
      }
      if (preprocess) {
        tensors.push_back(&batch->tensors[i]);
      } else {
        bytes.push_back(std::move(batch->bytes[i]));
      }
      ids.push_back(batch->ids[i]);
    }
    absl::Status st =
        preprocess ? EmbedTensorBatch(tensors, ids) : EmbedBatch(true, bytes, ids, image_cache_);
    if (!st.ok()) {
      drain();
      return st;
    }
    items_done += static_cast<int64_t>(batch->ids.size());
    ReportProgress(begin, end - begin, items_done, items_total);
  }

  // Scores.
  const int per = ScoresPerSample(b_.kind);
  out->chunk = chunk;
  out->begin = begin;
  out->end = end;
  out->scores.assign(static_cast<size_t>((end - begin) * per), kNaN);
  out->skipped.clear();
  auto dot = [this](const float* a, const float* b) {
    double acc = 0;
    for (int64_t j = 0; j < dim_; ++j) acc += static_cast<double>(a[j]) * b[j];
    return static_cast<float>(acc);
  };
  for (int64_t s = begin; s < end; ++s) {
    const Sample& sample = b_.samples[s];
    if (!sample.skip_reason.empty()) continue;  // reported by AggregateChunks
    const float* img[2] = {nullptr, nullptr};
    const float* txt[2] = {nullptr, nullptr};
    std::string reason;
    for (int k = 0; k < ni && reason.empty(); ++k) {
      const int32_t id = plan_.sample_images[s * ni + k];
      img[k] = image_cache_.Get(id);
      if (img[k] == nullptr) {
        const std::string* why = image_cache_.Failure(id);
        reason = absl::StrCat(ImageRole(b_.kind, k), " '", sample.images[k].annotation,
                              "': ", why ? *why : "not embedded");
      }
    }
    for (int k = 0; k < nt && reason.empty(); ++k) {
      const int32_t id = plan_.sample_texts[s * nt + k];
      txt[k] = text_cache_.Get(id);
      if (txt[k] == nullptr) {
        const std::string* why = text_cache_.Failure(id);
        reason = absl::StrCat(TextRole(b_.kind, k), " '", Shorten(sample.captions[k]),
                              "': ", why ? *why : "not embedded");
      }
    }
    if (!reason.empty()) {
      out->skipped.emplace_back(s, std::move(reason));
      continue;
    }
    float* o = out->scores.data() + (s - begin) * per;
    switch (b_.kind) {
      case SampleKind::kPair:
        o[0] = dot(txt[0], img[0]);  // s(c0,i0)
        o[1] = dot(txt[0], img[1]);  // s(c0,i1)
        o[2] = dot(txt[1], img[0]);  // s(c1,i0)
        o[3] = dot(txt[1], img[1]);  // s(c1,i1)
        break;
      case SampleKind::kCaptionFoil:
        o[0] = dot(txt[0], img[0]);
        o[1] = dot(txt[1], img[0]);
        break;
      case SampleKind::kSingle:
        o[0] = dot(txt[0], img[0]);
        break;
    }
  }

  // Drop embeddings no later sample needs.
  for (int64_t s = begin; s < end; ++s) {
    for (int k = 0; k < ni; ++k) {
      const int32_t id = plan_.sample_images[s * ni + k];
      if (id >= 0 && plan_.image_last_use[id] < end) image_cache_.Evict(id);
    }
    for (int k = 0; k < nt; ++k) {
      const int32_t id = plan_.sample_texts[s * nt + k];
      if (id >= 0 && plan_.text_last_use[id] < end) text_cache_.Evict(id);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<EvalResult> Runner::Run() {
  const absl::Time start = absl::Now();
  if (options_.batch_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size must be > 0, got ", options_.batch_size));
  }
  if (options_.chunk_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_size must be > 0, got ", options_.chunk_size));
  }
  if (options_.threads <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be > 0, got ", options_.threads));
  }
  EQSIM_RETURN_IF_ERROR(CheckBenchmarkShape(b_));
  const int64_t n = static_cast<int64_t>(b_.samples.size());
  const int64_t cs = options_.chunk_size;
  const int64_t num_chunks = (n + cs - 1) / cs;
  std::vector<ChunkResult> chunks(static_cast<size_t>(num_chunks));
  std::vector<bool> have(static_cast<size_t>(num_chunks), false);
  const int per = ScoresPerSample(b_.kind);
  for (const ChunkResult& r : options_.resume) {
    const int64_t want_end = std::min(n, (r.chunk + 1) * cs);
    if (r.chunk < 0 || r.chunk >= num_chunks || r.begin != r.chunk * cs || r.end != want_end ||
        static_cast<int64_t>(r.scores.size()) != (r.end - r.begin) * per) {
      return absl::InvalidArgumentError(
          absl::StrCat("resumed chunk ", r.chunk, " [", r.begin, ", ", r.end, ") with ",
                       r.scores.size(), " scores does not fit this benchmark (", n,
                       " samples, chunk size ", cs, ", ", per, " scores per sample)"));
    }
    chunks[r.chunk] = r;
    have[r.chunk] = true;
  }
  int64_t resumed = 0;
  for (int64_t c = 0; c < num_chunks; ++c) {
    if (have[c]) {
      ++resumed;
      done_samples_ += chunks[c].end - chunks[c].begin;
    }
  }
  if (options_.progress) options_.progress(done_samples_, n);
  pool_ = std::make_unique<WorkerPool>(options_.threads);
  for (int64_t c = 0; c < num_chunks; ++c) {
    if (have[c]) continue;
    if (Cancelled()) return CancelledStatus();
    const int64_t begin = c * cs, end = std::min(n, begin + cs);
    EQSIM_RETURN_IF_ERROR(RunChunk(c, begin, end, &chunks[c]));
    if (options_.on_chunk) EQSIM_RETURN_IF_ERROR(options_.on_chunk(chunks[c]));
    done_samples_ += end - begin;
    if (options_.progress) options_.progress(done_samples_, n);
  }
  pool_.reset();
  EQSIM_ASSIGN_OR_RETURN(EvalResult result, AggregateChunks(b_, chunks, options_.keep_scores));
  result.images_embedded = images_embedded_;
  result.texts_embedded = texts_embedded_;
  result.chunks_resumed = resumed;
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return result;
}

}  // namespace

std::string ChunkResult::ToJson() const {
  nlohmann::json j;
  j["chunk"] = chunk;
  j["begin"] = begin;
  j["end"] = end;
  nlohmann::json scores_json = nlohmann::json::array();
  for (float v : scores) {
    if (std::isnan(v)) {
      scores_json.push_back(nullptr);
    } else {
      scores_json.push_back(v);
    }
  }
  j["scores"] = std::move(scores_json);
  nlohmann::json sk = nlohmann::json::array();
  for (const auto& [pos, reason] : skipped) sk.push_back({pos, reason});
  j["skipped"] = std::move(sk);
  return j.dump();
}

absl::StatusOr<ChunkResult> ChunkResult::FromJson(std::string_view json) {
  nlohmann::json j = nlohmann::json::parse(json.begin(), json.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("chunk result: not a JSON object");
  }
  ChunkResult r;
  for (const char* f : {"chunk", "begin", "end"}) {
    if (!j.contains(f) || !j[f].is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk result: field '", f, "' missing or not an integer"));
    }
  }
  r.chunk = j["chunk"].get<int64_t>();
  r.begin = j["begin"].get<int64_t>();
  r.end = j["end"].get<int64_t>();
  if (r.begin < 0 || r.end < r.begin) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk result: bad range [", r.begin, ", ", r.end, ")"));
  }
  if (!j.contains("scores") || !j["scores"].is_array()) {
    return absl::InvalidArgumentError("chunk result: field 'scores' missing or not a list");
  }
  for (const auto& v : j["scores"]) {
    if (v.is_null()) {
      r.scores.push_back(kNaN);
    } else if (v.is_number()) {
      r.scores.push_back(v.get<float>());
    } else {
      return absl::InvalidArgumentError("chunk result: 'scores' holds a non-number");
    }
  }
  if (j.contains("skipped")) {
    if (!j["skipped"].is_array()) {
      return absl::InvalidArgumentError("chunk result: field 'skipped' is not a list");
    }
    for (const auto& e : j["skipped"]) {
      if (!e.is_array() || e.size() != 2 || !e[0].is_number_integer() || !e[1].is_string()) {
        return absl::InvalidArgumentError(
            "chunk result: 'skipped' entries must be [position, reason]");
      }
      r.skipped.emplace_back(e[0].get<int64_t>(), e[1].get<std::string>());
    }
  }
  return r;
}

absl::StatusOr<EvalResult> Evaluate(const Benchmark& benchmark, EmbeddingSource& source,
                                    const EvalOptions& options) {
  Runner runner(benchmark, source, options);
  return runner.Run();
}

absl::StatusOr<EvalResult> AggregateChunks(const Benchmark& b,
                                           const std::vector<ChunkResult>& chunks_in,
                                           bool keep_scores) {
  const int64_t n = static_cast<int64_t>(b.samples.size());
  const int per = ScoresPerSample(b.kind);
  std::vector<const ChunkResult*> chunks;
  for (const auto& c : chunks_in) chunks.push_back(&c);
  std::sort(chunks.begin(), chunks.end(),
            [](const ChunkResult* x, const ChunkResult* y) { return x->begin < y->begin; });
  int64_t covered = 0;
  for (const ChunkResult* c : chunks) {
    if (c->begin != covered || c->end < c->begin || c->end > n ||
        static_cast<int64_t>(c->scores.size()) != (c->end - c->begin) * per) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk results do not cover the ", n, " samples exactly once: chunk ",
                       c->chunk, " [", c->begin, ", ", c->end, ") with ", c->scores.size(),
                       " scores after ", covered, " samples"));
    }
    covered = c->end;
  }
  if (covered != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk results cover ", covered, " of ", n, " samples"));
  }
  EvalResult r;
  r.format = b.format;
  r.kind = b.kind;
  r.scores_per_sample = per;
  r.has_scores = keep_scores || b.kind == SampleKind::kSingle;
  if (r.has_scores) r.scores.reserve(static_cast<size_t>(n * per));
  MetricsAggregator agg;
  for (const auto& name : b.subsets) agg.Subset(name);
  for (const ChunkResult* c : chunks) {
    absl::flat_hash_map<int64_t, const std::string*> skipped;
    for (const auto& [pos, reason] : c->skipped) skipped[pos] = &reason;
    for (int64_t s = c->begin; s < c->end; ++s) {
      const Sample& sample = b.samples[s];
      const float* sc = c->scores.data() + (s - c->begin) * per;
      if (r.has_scores) r.scores.insert(r.scores.end(), sc, sc + per);
      const std::string* reason = nullptr;
      if (!sample.skip_reason.empty()) {
        reason = &sample.skip_reason;
      } else if (auto it = skipped.find(s); it != skipped.end()) {
        reason = it->second;
      }
      if (reason != nullptr) {
        agg.AddSkipped(sample.subset);
        r.skipped.push_back(SkippedEntry{sample.subset, sample.index, *reason});
        continue;
      }
      switch (b.kind) {
        case SampleKind::kPair:
          agg.AddPair(sample.subset, ScorePair(PairScores{sc[0], sc[1], sc[2], sc[3]}));
          break;
        case SampleKind::kCaptionFoil:
          agg.AddCaptionFoil(sample.subset, ScoreCaptionFoil(sc[0], sc[1]));
          break;
        case SampleKind::kSingle:
          agg.AddScoredSingle(sample.subset);
          break;
      }
    }
  }
  r.subsets = agg.subsets();
  r.overall = agg.Overall();
  return r;
}

absl::StatusOr<std::string> ScoresNpyBytes(SampleKind kind, const std::vector<float>& scores) {
  const int per = ScoresPerSample(kind);
  if (scores.size() % per != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(scores.size(), " scores is not a multiple of ", per, " scores per sample"));
  }
  const int64_t n = static_cast<int64_t>(scores.size()) / per;
  std::vector<int64_t> shape = per == 1 ? std::vector<int64_t>{n} : std::vector<int64_t>{n, per};
  return WriteNpyFloat32(shape, scores);
}

absl::Status WriteScoresNpy(const std::string& path, SampleKind kind,
                            const std::vector<float>& scores) {
  EQSIM_ASSIGN_OR_RETURN(std::string bytes, ScoresNpyBytes(kind, scores));
  return WriteNpyFile(path, bytes);
}

namespace {

nlohmann::ordered_json SubsetJson(const SubsetMetrics& m, SampleKind kind) {
  nlohmann::ordered_json j;
  j["subset"] = m.subset;
  j["samples"] = m.samples;
  j["skipped"] = m.skipped;
  if (kind == SampleKind::kPair) {
    j["text_score"] = m.text_score();
    j["image_score"] = m.image_score();
    j["group_score"] = m.group_score();
  } else if (kind == SampleKind::kCaptionFoil) {
    j["pairwise_accuracy"] = m.pairwise_accuracy();
  }
  return j;
}

}  // namespace

std::string EvalResultToJson(const EvalResult& r, int64_t max_skipped) {
  nlohmann::ordered_json j;
  j["format"] = BenchmarkFormatName(r.format);
  nlohmann::ordered_json subsets = nlohmann::ordered_json::array();
  for (const auto& s : r.subsets) subsets.push_back(SubsetJson(s, r.kind));
  j["subsets"] = std::move(subsets);
  j["overall"] = SubsetJson(r.overall, r.kind);
  nlohmann::ordered_json skipped = nlohmann::ordered_json::array();
  for (size_t i = 0; i < r.skipped.size() && static_cast<int64_t>(i) < max_skipped; ++i) {
    skipped.push_back({{"subset", r.skipped[i].subset},
                       {"index", r.skipped[i].index},
                       {"reason", r.skipped[i].reason}});
  }
  j["skipped"] = std::move(skipped);
  j["skipped_total"] = r.skipped.size();
  j["images_embedded"] = r.images_embedded;
  j["texts_embedded"] = r.texts_embedded;
  j["chunks_resumed"] = r.chunks_resumed;
  j["seconds"] = r.seconds;
  return j.dump(2);
}

}  // namespace eqsim
