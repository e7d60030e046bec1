// The eqsim C++ client: a thread-safe handle on one or several eqsim-server endpoints
// speaking eqsim.v1.SimilarityService (proto/eqsim/v1/similarity.proto).
//
//   eqsim::ClientOptions opts;
//   opts.targets = {"dns:///eqsim-headless.default.svc:8500"};  // all pods, round robin
//   auto client = eqsim::Client::Create(opts);
//   auto emb = (*client)->Embed({eqsim::Input::Text("a red bag"),
//                                *eqsim::Input::ImageFile("bag.png")});
//
// What it does for the caller:
// - one channel per target, gRPC `round_robin` over every address a DNS name resolves to
//   (a Kubernetes headless Service), keep-alive pings, TLS / mTLS, bearer token, message
//   limits matching the server (64 MiB);
// - retries with exponential backoff and jitter on UNAVAILABLE / RESOURCE_EXHAUSTED for
//   idempotent calls (everything except submitting an evaluation), moving to the next
//   target on every retry;
// - Embed / Score over any number of items: split into server-sized requests (items and
//   bytes), sent with bounded concurrency, reassembled in order, all pinned to the model
//   version that served the first request;
// - evaluation jobs: submit, watch with transparent reconnection, get, list, cancel,
//   download the score file.
// Errors are absl::Status with the gRPC code mapped 1:1 and the server's message kept,
// prefixed by the method and target.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/chunking.h"
#include "client/retry.h"
#include "eqsim/v1/similarity.grpc.pb.h"
#include "eqsim/v1/similarity.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"

namespace eqsim {

inline constexpr int64_t kDefaultMaxMessageBytes = int64_t{64} << 20;

struct TlsOptions {
  bool enabled = false;
  std::string root_ca_file;          // PEM roots; empty = the system's
  std::string cert_file;             // client certificate chain (mTLS)
  std::string key_file;              // client private key (mTLS)
  std::string server_name_override;  // TLS name to verify instead of the target's host
};

struct ClientOptions {
  // "host:port", "dns:///name:port" (every address, round robin), "unix:/path", ...
  std::vector<std::string> targets;
  // Deadline of each attempt of a unary call (and of the first event of a submit).
  absl::Duration timeout = absl::Seconds(30);
  // Deadline of a whole streaming call (watch, score download); InfiniteDuration = none.
  absl::Duration stream_timeout = absl::InfiniteDuration();
  TlsOptions tls;
  std::string bearer_token;  // sent as "authorization: Bearer <token>"
  int64_t max_message_bytes = kDefaultMaxMessageBytes;
  absl::Duration keepalive_time = absl::Seconds(30);  // zero = no keep-alive pings
  absl::Duration keepalive_timeout = absl::Seconds(10);
  std::string load_balancing = "round_robin";  // or "pick_first"
  // Cap of gRPC's reconnect backoff, so that a restarted server is found again quickly.
  absl::Duration max_reconnect_backoff = absl::Seconds(2);
  RetryOptions retry;
  int max_items_per_request = 64;
  int max_concurrency = 4;  // requests in flight per Embed / Score call
  // Consecutive failed reconnections of a watch before it gives up.
  int watch_max_reconnects = 30;
  Sleeper* sleeper = nullptr;  // nullptr = really sleep (tests inject a fake)
};

// Maps a gRPC status to absl (same code numbers) keeping the server's message, prefixed by
// `context` (e.g. "Embed @ localhost:8500") when not empty.
absl::Status FromGrpcStatus(const grpc::Status& status, const std::string& context = "");

// One item to embed: an encoded image or a UTF-8 text.
struct Input {
  enum class Kind { kImage, kText };
  Kind kind = Kind::kText;
  std::string data;

  static Input Text(std::string text) { return {Kind::kText, std::move(text)}; }
  // Already encoded bytes (PNG, JPEG, BMP, WebP, ...), sent as they are.
  static Input Image(std::string encoded) { return {Kind::kImage, std::move(encoded)}; }
  static absl::StatusOr<Input> ImageFile(const std::string& path);
  // uint8 RGB pixels (row r at rgb + r * stride), sent as an uncompressed BMP.
  static absl::StatusOr<Input> ImageRgb(const uint8_t* rgb, int width, int height,
                                        int64_t stride);
};

struct ModelSelector {
  std::string name;     // "" = the server's default model
  int64_t version = 0;  // 0 = newest served
};

struct EmbedOptions {
  ModelSelector model;
  bool unnormalized = false;
};

struct Embeddings {
  std::string model_name;
  int64_t model_version = 0;
  int dim = 0;
  int64_t rows = 0;
  std::vector<float> values;  // rows x dim, row-major, in input order
  const float* row(int64_t i) const { return values.data() + i * dim; }
};

struct ScoreOptions {
  ModelSelector model;
  bool pairwise = false;  // image i with text i instead of every image with every text
  bool softmax = false;   // matrix only: probabilities over the texts of each image
};

struct Scores {
  std::string model_name;
  int64_t model_version = 0;
  int64_t rows = 0;  // images (matrix) or pairs (pairwise)
  int64_t cols = 0;  // texts (matrix) or 1 (pairwise)
  std::vector<float> cosine;  // rows x cols
  std::vector<float> logits;  // rows x cols
  std::vector<float> probs;   // rows x cols when softmax was asked
  float logit_scale = 0.f;    // the multiplier exp(logit_scale)
};

bool IsTerminal(v1::JobState state);

class Client {
 public:
  using EvaluationCallback = std::function<void(const v1::Evaluation&)>;
  // Called before each reconnection of a watch with the error that broke the stream.
  using ReconnectCallback = std::function<void(const absl::Status& cause, int attempt)>;

  // Validates the options (targets, TLS files) and creates the channels (lazily connected).
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options);

  // ---- single requests, with retries; `endpoint` < 0 = next one in rotation ----
  absl::StatusOr<v1::EmbedResponse> EmbedRaw(const v1::EmbedRequest& request, int endpoint = -1);
  absl::StatusOr<v1::ScoreResponse> ScoreRaw(const v1::ScoreRequest& request, int endpoint = -1);
  absl::StatusOr<v1::ListModelsResponse> ListModels(int endpoint = -1);

  // ---- any number of items, chunked ----
  absl::StatusOr<Embeddings> Embed(const std::vector<Input>& items,
                                   const EmbedOptions& options = {});
  // `images` are encoded images. Matrix mode: rows = images, cols = texts.
  absl::StatusOr<Scores> Score(const std::vector<std::string>& images,
                               const std::vector<std::string>& texts,
                               const ScoreOptions& options = {});

  // ---- evaluation jobs ----
  // Submits (not retried: not idempotent) and returns the job as first reported, id set.
  // With `on_event`, keeps following the job like WatchEvaluation and returns its final
  // state instead.
  absl::StatusOr<v1::Evaluation> SubmitEvaluation(const v1::EvaluationSpec& spec,
                                                  const EvaluationCallback& on_event = nullptr,
                                                  const ReconnectCallback& on_reconnect = nullptr);
  absl::StatusOr<v1::Evaluation> GetEvaluation(const std::string& id);
  absl::StatusOr<std::vector<v1::Evaluation>> ListEvaluations(
      const std::vector<v1::JobState>& states = {});
  absl::StatusOr<v1::Evaluation> CancelEvaluation(const std::string& id);
  // Follows the job until it ends, calling `on_event` for every event; a dropped stream
  // (UNAVAILABLE, or an end without a final state) is re-opened with backoff. Returns the
  // final state (SUCCEEDED, FAILED or CANCELLED: check .state()).
  absl::StatusOr<v1::Evaluation> WatchEvaluation(const std::string& id,
                                                 const EvaluationCallback& on_event = nullptr,
                                                 const ReconnectCallback& on_reconnect = nullptr);
  // Writes the job's score file (.npy) to `path` (atomically, via path + ".part");
  // returns its size.
  absl::StatusOr<int64_t> DownloadScores(const std::string& id, const std::string& path);

  int num_endpoints() const { return static_cast<int>(endpoints_.size()); }
  const std::string& target(int endpoint) const { return endpoints_[endpoint].target; }
  const ClientOptions& options() const { return options_; }
  ChunkLimits chunk_limits() const;

 private:
  struct Endpoint {
    std::string target;
    std::shared_ptr<grpc::Channel> channel;      // options.load_balancing
    std::unique_ptr<v1::SimilarityService::Stub> stub;
    std::shared_ptr<grpc::Channel> job_channel;  // pick_first: jobs live on one server
    std::unique_ptr<v1::SimilarityService::Stub> job_stub;
  };

  explicit Client(ClientOptions options) : options_(std::move(options)) {}
  void PrepareContext(grpc::ClientContext* ctx, absl::Duration timeout) const;
  int NextEndpoint();
  // Runs `call(endpoint)` with the retry policy, rotating endpoints from `first`.
  absl::Status Retry(bool idempotent, int first,
                     const std::function<absl::Status(int endpoint)>& call);
  // Job calls: the endpoint that knows `id` (remembered, else tried in order on NOT_FOUND).
  absl::Status OnJobEndpoint(const std::string& id,
                             const std::function<absl::Status(int endpoint)>& call);
  int JobEndpoint(const std::string& id);
  void RememberJob(const std::string& id, int endpoint);
  absl::StatusOr<v1::Evaluation> Follow(const std::string& id, int endpoint,
                                        const EvaluationCallback& on_event,
                                        const ReconnectCallback& on_reconnect);
  // Runs fn(i) for i in [0, n) on up to max_concurrency threads; first error wins.
  absl::Status ParallelFor(int64_t n, const std::function<absl::Status(int64_t)>& fn);

  ClientOptions options_;
  std::vector<Endpoint> endpoints_;
  std::atomic<uint64_t> rotation_{0};
  absl::Mutex jobs_mu_;
  absl::flat_hash_map<std::string, int> job_endpoint_ ABSL_GUARDED_BY(jobs_mu_);
};

}  // namespace eqsim
