#include "client/client.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/image_encoding.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace eqsim {
namespace {

constexpr int64_t kRequestHeadroomBytes = int64_t{64} << 10;  // fields besides the items

std::chrono::system_clock::time_point DeadlineAfter(absl::Duration d) {
  return absl::ToChronoTime(absl::Now() + d);
}

// Rewrites a leading "item N" of a server message so that N indexes the caller's whole
// list rather than one chunk.
std::string RebaseItemIndex(absl::string_view message, int64_t offset) {
  if (offset == 0) return std::string(message);
  for (absl::string_view prefix : {"item ", "items[", "image ", "text "}) {
    if (!absl::StartsWith(message, prefix)) continue;
    size_t end = prefix.size();
    while (end < message.size() && std::isdigit(static_cast<unsigned char>(message[end]))) ++end;
    int64_t index = 0;
    if (end == prefix.size() ||
        !absl::SimpleAtoi(message.substr(prefix.size(), end - prefix.size()), &index)) {
      break;
    }
    return absl::StrCat(prefix, index + offset, message.substr(end));
  }
  return std::string(message);
}

absl::Status RebaseStatus(const absl::Status& s, int64_t offset, absl::string_view what) {
  if (s.ok() || offset == 0) return s;
  // The message is "<Method> @ <target>: <server message>"; rebase the server part.
  absl::string_view msg = s.message();
  size_t colon = msg.find(": ");
  if (colon == absl::string_view::npos) return s;
  return absl::Status(s.code(), absl::StrCat(msg.substr(0, colon + 2),
                                             RebaseItemIndex(msg.substr(colon + 2), offset),
                                             " (", what, " from item ", offset, ")"));
}

absl::Status ReadPem(const std::string& path, const char* what, std::string* out) {
  if (path.empty()) return absl::OkStatus();
  auto data = ReadBinaryFile(path, int64_t{1} << 24);
  if (!data.ok()) {
    return absl::Status(data.status().code(),
                        absl::StrCat("TLS ", what, ": ", data.status().message()));
  }
  *out = std::move(*data);
  return absl::OkStatus();
}

void SoftmaxRows(int64_t rows, int64_t cols, const std::vector<float>& logits,
                 std::vector<float>* probs) {
  probs->assign(logits.size(), 0.f);
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = logits.data() + r * cols;
    float* out = probs->data() + r * cols;
    float mx = -INFINITY;
    for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, in[c]);
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(static_cast<double>(in[c] - mx));
    for (int64_t c = 0; c < cols; ++c)
      out[c] = static_cast<float>(std::exp(static_cast<double>(in[c] - mx)) / sum);
  }
}

absl::Status Annotate(const absl::Status& s, absl::string_view prefix) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(prefix, ": ", s.message()));
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status, const std::string& context) {
  if (status.ok()) return absl::OkStatus();
  std::string message = status.error_message();
  if (message.empty()) message = "(no message from the server)";
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      context.empty() ? message : absl::StrCat(context, ": ", message));
}

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

absl::StatusOr<Input> Input::ImageFile(const std::string& path) {
  auto data = ReadBinaryFile(path);
  if (!data.ok()) {
    return absl::Status(data.status().code(), absl::StrCat("image ", data.status().message()));
  }
  if (data->empty()) {
    return absl::InvalidArgumentError(absl::StrCat("image '", path, "': file is empty"));
  }
  return Image(*std::move(data));
}

absl::StatusOr<Input> Input::ImageRgb(const uint8_t* rgb, int width, int height,
                                      int64_t stride) {
  auto bmp = EncodeBmp(rgb, width, height, stride);
  if (!bmp.ok()) return bmp.status();
  return Image(*std::move(bmp));
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientOptions options) {
  if (options.targets.empty()) {
    return absl::InvalidArgumentError("no target given (host:port or dns:///name:port)");
  }
  for (size_t i = 0; i < options.targets.size(); ++i) {
    if (options.targets[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("target ", i, " is empty"));
    }
  }
  if (options.max_message_bytes < (int64_t{1} << 16) ||
      options.max_message_bytes > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max message bytes must be in [65536, 2^31-1], got ", options.max_message_bytes));
  }
  if (options.max_items_per_request <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("max items per request must be positive, got ",
                                                   options.max_items_per_request));
  }
  if (options.max_concurrency <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max concurrency must be positive, got ", options.max_concurrency));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be positive");
  }
  if (options.load_balancing != "round_robin" && options.load_balancing != "pick_first") {
    return absl::InvalidArgumentError(absl::StrCat(
        "load balancing must be round_robin or pick_first, got '", options.load_balancing, "'"));
  }
  if (options.tls.cert_file.empty() != options.tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS client certificate and key must be given together (mTLS)");
  }

  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls.enabled || !options.tls.root_ca_file.empty() ||
      !options.tls.cert_file.empty()) {
    options.tls.enabled = true;
    grpc::SslCredentialsOptions ssl;
    absl::Status s = ReadPem(options.tls.root_ca_file, "root CA", &ssl.pem_root_certs);
    if (s.ok()) s = ReadPem(options.tls.cert_file, "client certificate", &ssl.pem_cert_chain);
    if (s.ok()) s = ReadPem(options.tls.key_file, "client key", &ssl.pem_private_key);
    if (!s.ok()) return s;
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }

  auto make_args = [&](const std::string& lb) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
    args.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
    if (options.keepalive_time > absl::ZeroDuration()) {
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                  static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                  static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
    }
    const int max_backoff_ms =
        static_cast<int>(std::max<int64_t>(100, absl::ToInt64Milliseconds(options.max_reconnect_backoff)));
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_backoff_ms);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(max_backoff_ms, 1000));
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::min(max_backoff_ms, 100));
    // Retries are ours (backoff, jitter, endpoint rotation); keep gRPC's transparent ones off
    // so that an attempt is an attempt.
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
    args.SetServiceConfigJSON(absl::StrCat(R"({"loadBalancingConfig":[{")", lb, R"(":{}}]})"));
    if (!options.tls.server_name_override.empty()) {
      args.SetSslTargetNameOverride(options.tls.server_name_override);
    }
    return args;
  };

  std::unique_ptr<Client> client(new Client(std::move(options)));
  const ClientOptions& o = client->options_;
  for (const std::string& target : o.targets) {
    Endpoint ep;
    ep.target = target;
    ep.channel = grpc::CreateCustomChannel(target, creds, make_args(o.load_balancing));
    ep.stub = v1::SimilarityService::NewStub(ep.channel);
    if (o.load_balancing == "pick_first") {
      ep.job_channel = ep.channel;
    } else {
      ep.job_channel = grpc::CreateCustomChannel(target, creds, make_args("pick_first"));
    }
    ep.job_stub = v1::SimilarityService::NewStub(ep.job_channel);
    client->endpoints_.push_back(std::move(ep));
  }
  return client;
}

ChunkLimits Client::chunk_limits() const {
  ChunkLimits limits;
  limits.max_items = options_.max_items_per_request;
  limits.max_bytes = options_.max_message_bytes - kRequestHeadroomBytes;
  return limits;
}

void Client::PrepareContext(grpc::ClientContext* ctx, absl::Duration timeout) const {
  if (timeout != absl::InfiniteDuration()) ctx->set_deadline(DeadlineAfter(timeout));
  if (!options_.bearer_token.empty()) {
    ctx->AddMetadata("authorization", absl::StrCat("Bearer ", options_.bearer_token));
  }
}

int Client::NextEndpoint() {
  return static_cast<int>(rotation_.fetch_add(1, std::memory_order_relaxed) % endpoints_.size());
}

absl::Status Client::Retry(bool idempotent, int first,
                           const std::function<absl::Status(int endpoint)>& call) {
  if (first < 0) first = NextEndpoint();
  const int n = num_endpoints();
  return RunWithRetries(options_.retry, idempotent, options_.sleeper,
                        [&](int attempt) { return call((first + attempt) % n); });
}

absl::StatusOr<v1::EmbedResponse> Client::EmbedRaw(const v1::EmbedRequest& request,
                                                   int endpoint) {
  v1::EmbedResponse response;
  absl::Status s = Retry(true, endpoint, [&](int ep) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, options_.timeout);
    response.Clear();
    return FromGrpcStatus(endpoints_[ep].stub->Embed(&ctx, request, &response),
                          absl::StrCat("Embed @ ", endpoints_[ep].target));
  });
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::ScoreResponse> Client::ScoreRaw(const v1::ScoreRequest& request,
                                                   int endpoint) {
  v1::ScoreResponse response;
  absl::Status s = Retry(true, endpoint, [&](int ep) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, options_.timeout);
    response.Clear();
    return FromGrpcStatus(endpoints_[ep].stub->Score(&ctx, request, &response),
                          absl::StrCat("Score @ ", endpoints_[ep].target));
  });
  if (!s.ok()) return s;
  return response;
}

absl::StatusOr<v1::ListModelsResponse> Client::ListModels(int endpoint) {
  v1::ListModelsResponse response;
  absl::Status s = Retry(true, endpoint, [&](int ep) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, options_.timeout);
    response.Clear();
    return FromGrpcStatus(
        endpoints_[ep].stub->ListModels(&ctx, v1::ListModelsRequest(), &response),
        absl::StrCat("ListModels @ ", endpoints_[ep].target));
  });
  if (!s.ok()) return s;
  return response;
}

absl::Status Client::ParallelFor(int64_t n, const std::function<absl::Status(int64_t)>& fn) {
  if (n <= 0) return absl::OkStatus();
  const int workers = static_cast<int>(std::min<int64_t>(n, options_.max_concurrency));
  if (workers == 1) {
    for (int64_t i = 0; i < n; ++i) {
      absl::Status s = fn(i);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  absl::Mutex mu;
  absl::Status first_error;
  int64_t first_error_index = n;
  auto work = [&] {
    while (!failed.load()) {
      const int64_t i = next.fetch_add(1);
      if (i >= n) return;
      absl::Status s = fn(i);
      if (!s.ok()) {
        absl::MutexLock lock(&mu);
        // Report the earliest failing chunk, whatever order they finished in.
        if (i < first_error_index) {
          first_error_index = i;
          first_error = s;
        }
        failed.store(true);
      }
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(workers);
  for (int w = 0; w < workers; ++w) threads.emplace_back(work);
  for (auto& t : threads) t.join();
  return first_error;
}

absl::StatusOr<Embeddings> Client::Embed(const std::vector<Input>& items,
                                         const EmbedOptions& options) {
  if (items.empty()) return absl::InvalidArgumentError("Embed: no items given");
  std::vector<int64_t> sizes;
  sizes.reserve(items.size());
  for (const Input& item : items) sizes.push_back(static_cast<int64_t>(item.data.size()));
  auto chunks = PlanChunks(sizes, chunk_limits());
  if (!chunks.ok()) return Annotate(chunks.status(), "Embed");

  auto make_request = [&](const Chunk& c, const ModelSelector& model) {
    v1::EmbedRequest req;
    req.mutable_model()->set_name(model.name);
    req.mutable_model()->set_version(model.version);
    req.set_unnormalized(options.unnormalized);
    for (int64_t i = c.begin; i < c.end; ++i) {
      v1::Item* it = req.add_items();
      if (items[i].kind == Input::Kind::kImage) {
        it->set_image(items[i].data);
      } else {
        it->set_text(items[i].data);
      }
    }
    return req;
  };

  Embeddings out;
  auto absorb = [&](const Chunk& c, const v1::EmbedResponse& resp) -> absl::Status {
    if (resp.embeddings_size() != c.size()) {
      return absl::InternalError(absl::StrCat("Embed: the server returned ",
                                              resp.embeddings_size(), " embeddings for ",
                                              c.size(), " items (items ", c.begin, "..", c.end - 1,
                                              ")"));
    }
    for (int i = 0; i < resp.embeddings_size(); ++i) {
      if (resp.embeddings(i).values_size() != out.dim) {
        return absl::InternalError(absl::StrCat("Embed: item ", c.begin + i, " has ",
                                                resp.embeddings(i).values_size(),
                                                " values, expected dim ", out.dim));
      }
      std::copy(resp.embeddings(i).values().begin(), resp.embeddings(i).values().end(),
                out.values.begin() + (c.begin + i) * out.dim);
    }
    return absl::OkStatus();
  };

  // The first request runs alone; the rest are pinned to the model version it reports, so a
  // version rolled out mid-call cannot mix two embedding spaces in one result.
  const Chunk& first = (*chunks)[0];
  auto resp0 = EmbedRaw(make_request(first, options.model));
  if (!resp0.ok()) return resp0.status();
  out.model_name = resp0->model().name();
  out.model_version = resp0->model().version();
  out.dim = resp0->dim();
  out.rows = static_cast<int64_t>(items.size());
  if (out.dim <= 0) {
    return absl::InternalError(absl::StrCat("Embed: the server reported dim ", out.dim));
  }
  out.values.assign(static_cast<size_t>(out.rows * out.dim), 0.f);
  if (absl::Status s = absorb(first, *resp0); !s.ok()) return s;
  const ModelSelector pinned{out.model_name, out.model_version};
  absl::Status s = ParallelFor(static_cast<int64_t>(chunks->size()) - 1, [&](int64_t k) {
    const Chunk& c = (*chunks)[k + 1];
    auto resp = EmbedRaw(make_request(c, pinned));
    if (!resp.ok()) return RebaseStatus(resp.status(), c.begin, "request");
    if (resp->dim() != out.dim) {
      return absl::InternalError(absl::StrCat("Embed: dim changed from ", out.dim, " to ",
                                              resp->dim(), " at item ", c.begin));
    }
    return absorb(c, *resp);
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<Scores> Client::Score(const std::vector<std::string>& images,
                                     const std::vector<std::string>& texts,
                                     const ScoreOptions& options) {
  if (images.empty()) return absl::InvalidArgumentError("Score: no images given");
  if (texts.empty()) return absl::InvalidArgumentError("Score: no texts given");
  if (options.pairwise && images.size() != texts.size()) {
    return absl::InvalidArgumentError(absl::StrCat("Score: pairwise mode needs as many images (",
                                                   images.size(), ") as texts (", texts.size(),
                                                   ")"));
  }
  if (options.pairwise && options.softmax) {
    return absl::InvalidArgumentError("Score: softmax is only defined for matrix mode");
  }
  const ChunkLimits limits = chunk_limits();

  // A tile = (image chunk, text chunk); pairwise tiles share the same range for both.
  struct Tile {
    Chunk images;
    Chunk texts;
  };
  std::vector<Tile> tiles;
  if (options.pairwise) {
    std::vector<int64_t> sizes(images.size());
    for (size_t i = 0; i < images.size(); ++i)
      sizes[i] = static_cast<int64_t>(images[i].size() + texts[i].size()) + kPerItemOverheadBytes;
    auto chunks = PlanChunks(sizes, limits);
    if (!chunks.ok()) return Annotate(chunks.status(), "Score (pairs)");
    for (const Chunk& c : *chunks) tiles.push_back({c, c});
  } else {
    // Texts first, at most half the byte budget per request; images get the rest.
    std::vector<int64_t> tsizes(texts.size()), isizes(images.size());
    for (size_t i = 0; i < texts.size(); ++i) tsizes[i] = static_cast<int64_t>(texts[i].size());
    for (size_t i = 0; i < images.size(); ++i) isizes[i] = static_cast<int64_t>(images[i].size());
    ChunkLimits tl = limits;
    tl.max_bytes = limits.max_bytes / 2;
    auto tchunks = PlanChunks(tsizes, tl);
    if (!tchunks.ok()) return Annotate(tchunks.status(), "Score (texts)");
    int64_t max_text_bytes = 0;
    for (const Chunk& c : *tchunks) max_text_bytes = std::max(max_text_bytes, c.bytes);
    ChunkLimits il = limits;
    il.max_bytes = limits.max_bytes - max_text_bytes;
    auto ichunks = PlanChunks(isizes, il);
    if (!ichunks.ok()) return Annotate(ichunks.status(), "Score (images)");
    for (const Chunk& ic : *ichunks)
      for (const Chunk& tc : *tchunks) tiles.push_back({ic, tc});
  }
  const bool text_split = !options.pairwise && tiles.size() > 0 &&
                          tiles[0].texts.size() != static_cast<int64_t>(texts.size());

  Scores out;
  out.rows = static_cast<int64_t>(images.size());
  out.cols = options.pairwise ? 1 : static_cast<int64_t>(texts.size());
  out.cosine.assign(static_cast<size_t>(out.rows * out.cols), 0.f);
  out.logits.assign(out.cosine.size(), 0.f);
  const bool server_softmax = options.softmax && !text_split;
  if (server_softmax) out.probs.assign(out.cosine.size(), 0.f);

  auto make_request = [&](const Tile& t, const ModelSelector& model) {
    v1::ScoreRequest req;
    req.mutable_model()->set_name(model.name);
    req.mutable_model()->set_version(model.version);
    req.set_mode(options.pairwise ? v1::ScoreRequest::PAIRWISE : v1::ScoreRequest::MATRIX);
    req.set_softmax(server_softmax);
    for (int64_t i = t.images.begin; i < t.images.end; ++i) req.add_images(images[i]);
    for (int64_t i = t.texts.begin; i < t.texts.end; ++i) req.add_texts(texts[i]);
    return req;
  };
  auto absorb = [&](const Tile& t, const v1::ScoreResponse& r) -> absl::Status {
    const int64_t rows = t.images.size();
    const int64_t cols = options.pairwise ? 1 : t.texts.size();
    const int64_t n = rows * cols;
    if (r.rows() != rows || r.cols() != cols || r.cosine_size() != n || r.logits_size() != n ||
        (server_softmax && r.probs_size() != n)) {
      return absl::InternalError(absl::StrFormat(
          "Score: malformed response for images %d..%d: %d x %d with %d cosines, %d logits, "
          "%d probs; expected %d x %d",
          t.images.begin, t.images.end - 1, r.rows(), r.cols(), r.cosine_size(), r.logits_size(),
          r.probs_size(), rows, cols));
    }
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        const size_t dst = static_cast<size_t>((t.images.begin + i) * out.cols +
                                               (options.pairwise ? 0 : t.texts.begin + j));
        out.cosine[dst] = r.cosine(static_cast<int>(i * cols + j));
        out.logits[dst] = r.logits(static_cast<int>(i * cols + j));
        if (server_softmax) out.probs[dst] = r.probs(static_cast<int>(i * cols + j));
      }
    }
    return absl::OkStatus();
  };

  auto r0 = ScoreRaw(make_request(tiles[0], options.model));
  if (!r0.ok()) return r0.status();
  out.model_name = r0->model().name();
  out.model_version = r0->model().version();
  out.logit_scale = r0->logit_scale();
  if (absl::Status s = absorb(tiles[0], *r0); !s.ok()) return s;
  const ModelSelector pinned{out.model_name, out.model_version};
  absl::Status s = ParallelFor(static_cast<int64_t>(tiles.size()) - 1, [&](int64_t k) {
    const Tile& t = tiles[k + 1];
    auto r = ScoreRaw(make_request(t, pinned));
    if (!r.ok()) return RebaseStatus(r.status(), t.images.begin, "request");
    return absorb(t, *r);
  });
  if (!s.ok()) return s;
  if (options.softmax && !server_softmax) SoftmaxRows(out.rows, out.cols, out.logits, &out.probs);
  return out;
}

// ---- evaluation jobs ----

int Client::JobEndpoint(const std::string& id) {
  absl::MutexLock lock(&jobs_mu_);
  auto it = job_endpoint_.find(id);
  return it == job_endpoint_.end() ? -1 : it->second;
}

void Client::RememberJob(const std::string& id, int endpoint) {
  absl::MutexLock lock(&jobs_mu_);
  job_endpoint_[id] = endpoint;
}

absl::Status Client::OnJobEndpoint(const std::string& id,
                                   const std::function<absl::Status(int endpoint)>& call) {
  if (id.empty()) return absl::InvalidArgumentError("evaluation id is empty");
  const int known = JobEndpoint(id);
  if (known >= 0 || num_endpoints() == 1) {
    return Retry(true, 0, [&](int) { return call(known >= 0 ? known : 0); });
  }
  // Not known yet: the first endpoint that does not answer NOT_FOUND owns it.
  absl::Status last;
  for (int ep = 0; ep < num_endpoints(); ++ep) {
    last = Retry(true, 0, [&](int) { return call(ep); });
    if (last.code() != absl::StatusCode::kNotFound) {
      if (last.ok()) RememberJob(id, ep);
      return last;
    }
  }
  return last;
}

absl::StatusOr<v1::Evaluation> Client::GetEvaluation(const std::string& id) {
  v1::Evaluation ev;
  v1::GetEvaluationRequest req;
  req.set_id(id);
  absl::Status s = OnJobEndpoint(id, [&](int ep) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, options_.timeout);
    ev.Clear();
    return FromGrpcStatus(endpoints_[ep].job_stub->GetEvaluation(&ctx, req, &ev),
                          absl::StrCat("GetEvaluation @ ", endpoints_[ep].target));
  });
  if (!s.ok()) return s;
  return ev;
}

absl::StatusOr<v1::Evaluation> Client::CancelEvaluation(const std::string& id) {
  // Cancelling twice is harmless, so it is retried like a read.
  v1::Evaluation ev;
  v1::CancelEvaluationRequest req;
  req.set_id(id);
  absl::Status s = OnJobEndpoint(id, [&](int ep) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, options_.timeout);
    ev.Clear();
    return FromGrpcStatus(endpoints_[ep].job_stub->CancelEvaluation(&ctx, req, &ev),
                          absl::StrCat("CancelEvaluation @ ", endpoints_[ep].target));
  });
  if (!s.ok()) return s;
  return ev;
}

absl::StatusOr<std::vector<v1::Evaluation>> Client::ListEvaluations(
    const std::vector<v1::JobState>& states) {
  v1::ListEvaluationsRequest req;
  for (v1::JobState st : states) req.add_states(st);
  std::vector<v1::Evaluation> all;
  for (int ep = 0; ep < num_endpoints(); ++ep) {
    v1::ListEvaluationsResponse resp;
    absl::Status s = Retry(true, 0, [&](int) {
      grpc::ClientContext ctx;
      PrepareContext(&ctx, options_.timeout);
      resp.Clear();
      return FromGrpcStatus(endpoints_[ep].job_stub->ListEvaluations(&ctx, req, &resp),
                            absl::StrCat("ListEvaluations @ ", endpoints_[ep].target));
    });
    if (!s.ok()) return s;
    for (const v1::Evaluation& ev : resp.evaluations()) {
      RememberJob(ev.id(), ep);
      all.push_back(ev);
    }
  }
  if (num_endpoints() > 1) {
    std::stable_sort(all.begin(), all.end(), [](const v1::Evaluation& a, const v1::Evaluation& b) {
      return a.created_unix_ms() > b.created_unix_ms();
    });
  }
  return all;
}

absl::StatusOr<v1::Evaluation> Client::SubmitEvaluation(const v1::EvaluationSpec& spec,
                                                        const EvaluationCallback& on_event,
                                                        const ReconnectCallback& on_reconnect) {
  const int ep = 0;  // jobs are submitted to the first target (pick_first channel)
  const std::string what = absl::StrCat("EvaluateBenchmark @ ", endpoints_[ep].target);
  v1::EvaluateBenchmarkRequest req;
  *req.mutable_spec() = spec;
  grpc::ClientContext ctx;
  PrepareContext(&ctx, options_.timeout);
  auto reader = endpoints_[ep].job_stub->EvaluateBenchmark(&ctx, req);
  v1::EvaluationEvent event;
  if (!reader->Read(&event)) {
    return FromGrpcStatus(reader->Finish(), what);
  }
  // The job keeps running when this stream goes away; the first event carries its id.
  ctx.TryCancel();
  reader->Finish();
  const v1::Evaluation& first = event.evaluation();
  if (first.id().empty()) {
    return absl::InternalError(absl::StrCat(what, ": the first event carries no job id"));
  }
  RememberJob(first.id(), ep);
  if (!on_event) return first;
  on_event(first);
  if (IsTerminal(first.state())) return first;
  return Follow(first.id(), ep, on_event, on_reconnect);
}

absl::StatusOr<v1::Evaluation> Client::WatchEvaluation(const std::string& id,
                                                       const EvaluationCallback& on_event,
                                                       const ReconnectCallback& on_reconnect) {
  if (id.empty()) return absl::InvalidArgumentError("evaluation id is empty");
  int ep = JobEndpoint(id);
  if (ep < 0) {
    if (num_endpoints() == 1) {
      ep = 0;
    } else {
      // Find the owner first (Get tries the endpoints in turn).
      auto ev = GetEvaluation(id);
      if (!ev.ok()) return ev.status();
      ep = JobEndpoint(id);
      if (ep < 0) ep = 0;
    }
  }
  return Follow(id, ep, on_event, on_reconnect);
}

absl::StatusOr<v1::Evaluation> Client::Follow(const std::string& id, int ep,
                                              const EvaluationCallback& on_event,
                                              const ReconnectCallback& on_reconnect) {
  const std::string what = absl::StrCat("WatchEvaluation @ ", endpoints_[ep].target);
  Sleeper* sleeper = options_.sleeper != nullptr ? options_.sleeper : Sleeper::Real();
  Backoff backoff(options_.retry);
  int failures = 0;
  v1::WatchEvaluationRequest req;
  req.set_id(id);
  while (true) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, options_.stream_timeout);
    auto reader = endpoints_[ep].job_stub->WatchEvaluation(&ctx, req);
    v1::EvaluationEvent event;
    while (reader->Read(&event)) {
      failures = 0;
      backoff.Reset();
      if (on_event) on_event(event.evaluation());
      if (IsTerminal(event.evaluation().state())) {
        ctx.TryCancel();
        reader->Finish();
        return event.evaluation();
      }
    }
    absl::Status st = FromGrpcStatus(reader->Finish(), what);
    if (st.ok()) {
      // The server closed the stream before the job ended (e.g. it is draining).
      st = absl::UnavailableError(absl::StrCat(what, ": stream ended before job ", id,
                                               " finished"));
    } else if (!IsRetryableCode(st.code(), options_.retry)) {
      return st;
    }
    if (++failures > options_.watch_max_reconnects) {
      return absl::Status(st.code(), absl::StrCat(st.message(), " (gave up after ",
                                                  options_.watch_max_reconnects,
                                                  " reconnections)"));
    }
    if (on_reconnect) on_reconnect(st, failures);
    sleeper->Sleep(backoff.Next());
  }
}

absl::StatusOr<int64_t> Client::DownloadScores(const std::string& id, const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("no output path for the score file");
  const std::string part = path + ".part";
  int64_t written = 0;
  v1::GetEvaluationScoresRequest req;
  req.set_id(id);
  absl::Status s = OnJobEndpoint(id, [&](int ep) -> absl::Status {
    const std::string what = absl::StrCat("GetEvaluationScores @ ", endpoints_[ep].target);
    std::ofstream out(part, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", part, "'"));
    grpc::ClientContext ctx;
    PrepareContext(&ctx, options_.stream_timeout);
    auto reader = endpoints_[ep].job_stub->GetEvaluationScores(&ctx, req);
    v1::ScoresChunk chunk;
    int64_t total = -1;
    written = 0;
    while (reader->Read(&chunk)) {
      if (chunk.total_bytes() > 0) total = chunk.total_bytes();
      out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
      written += static_cast<int64_t>(chunk.data().size());
    }
    absl::Status st = FromGrpcStatus(reader->Finish(), what);
    if (!st.ok()) return st;
    out.close();
    if (!out) return absl::DataLossError(absl::StrCat("writing '", part, "' failed"));
    if (total >= 0 && written != total) {
      return absl::DataLossError(absl::StrCat(what, ": received ", written, " of ", total,
                                              " bytes"));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) {
    std::remove(part.c_str());
    return s;
  }
  if (std::rename(part.c_str(), path.c_str()) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot rename '", part, "' to '", path, "'"));
  }
  return written;
}

}  // namespace eqsim
