#include "client/cli/common.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/image_encoding.h"
#include "google/protobuf/util/json_util.h"

ABSL_FLAG(std::vector<std::string>, target, {},
          "Server address(es): host:port, dns:///name:port (every address of the name, round "
          "robin: a Kubernetes headless Service), unix:/path. Repeatable or comma separated. "
          "Default: $EQSIM_TARGET, else localhost:8500");
ABSL_FLAG(bool, json, false, "Print machine-readable JSON on stdout instead of text");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(30),
          "Deadline of each request attempt (e.g. 500ms, 30s, 2m)");
ABSL_FLAG(bool, tls, false, "Use TLS (implied by --tls-ca / --tls-cert)");
ABSL_FLAG(std::string, tls_ca, "", "PEM file of the root CA(s) to verify the server with");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate chain for mutual TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM client private key for mutual TLS");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to verify in the server certificate instead of the target's host");
ABSL_FLAG(std::string, token_file, "",
          "File holding a bearer token sent as 'authorization: Bearer <token>' "
          "(default: $EQSIM_TOKEN_FILE)");
ABSL_FLAG(int64_t, max_message_bytes, eqsim::kDefaultMaxMessageBytes,
          "Largest gRPC message sent or received; must match the server's --max-message-bytes");
ABSL_FLAG(int32_t, retries, 5,
          "Attempts per idempotent request on UNAVAILABLE / RESOURCE_EXHAUSTED (1 = no retry)");
ABSL_FLAG(absl::Duration, retry_backoff, absl::Milliseconds(100),
          "First retry delay; doubles per attempt with +-20% jitter, capped at 5s");
ABSL_FLAG(std::string, lb, "round_robin",
          "Load balancing over the addresses of one target: round_robin or pick_first");
ABSL_FLAG(absl::Duration, keepalive, absl::Seconds(30),
          "Interval of HTTP/2 keep-alive pings that detect dead connections (0 = off)");
ABSL_FLAG(bool, progress, true, "Show progress on stderr for long work");
ABSL_FLAG(std::string, model, "", "Model name (default: the server's default model)");
ABSL_FLAG(int64_t, model_version, 0, "Model version (0 = the newest served)");

namespace eqsim::cli {

const std::vector<std::string>& CommonFlags() {
  static const auto* flags = new std::vector<std::string>{
      "target",   "json",       "timeout",           "tls",     "tls_ca",
      "tls_cert", "tls_key",    "tls_server_name",   "token_file", "max_message_bytes",
      "retries",  "retry_backoff", "lb",             "keepalive", "progress"};
  return *flags;
}

const std::vector<std::string>& ModelFlags() {
  static const auto* flags = new std::vector<std::string>{"model", "model_version"};
  return *flags;
}

absl::StatusOr<ClientOptions> ClientOptionsFromFlags() {
  ClientOptions o;
  for (const std::string& t : absl::GetFlag(FLAGS_target)) {
    std::string s(absl::StripAsciiWhitespace(t));
    if (!s.empty()) o.targets.push_back(s);
  }
  if (o.targets.empty()) {
    const char* env = std::getenv("EQSIM_TARGET");
    if (env != nullptr && *env != '\0') {
      for (absl::string_view t : absl::StrSplit(env, ',', absl::SkipWhitespace()))
        o.targets.emplace_back(absl::StripAsciiWhitespace(t));
    } else {
      o.targets.push_back("localhost:8500");
    }
  }
  o.timeout = absl::GetFlag(FLAGS_timeout);
  if (o.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--timeout must be positive");
  }
  o.tls.enabled = absl::GetFlag(FLAGS_tls);
  o.tls.root_ca_file = absl::GetFlag(FLAGS_tls_ca);
  o.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  o.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  o.tls.server_name_override = absl::GetFlag(FLAGS_tls_server_name);
  std::string token_file = absl::GetFlag(FLAGS_token_file);
  if (token_file.empty()) {
    const char* env = std::getenv("EQSIM_TOKEN_FILE");
    if (env != nullptr) token_file = env;
  }
  if (!token_file.empty()) {
    auto token = ReadBinaryFile(token_file, 1 << 16);
    if (!token.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--token-file ", token.status().message()));
    }
    o.bearer_token = std::string(absl::StripAsciiWhitespace(*token));
    if (o.bearer_token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--token-file '", token_file, "' is empty"));
    }
  }
  o.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o.retry.max_attempts = absl::GetFlag(FLAGS_retries);
  if (o.retry.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--retries must be at least 1, got ", o.retry.max_attempts));
  }
  o.retry.initial_backoff = absl::GetFlag(FLAGS_retry_backoff);
  o.load_balancing = absl::GetFlag(FLAGS_lb);
  o.keepalive_time = absl::GetFlag(FLAGS_keepalive);
  return o;
}

absl::StatusOr<std::unique_ptr<Client>> MakeClient() {
  auto o = ClientOptionsFromFlags();
  if (!o.ok()) return o.status();
  return Client::Create(*std::move(o));
}

ModelSelector ModelFromFlags() {
  return ModelSelector{absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_model_version)};
}

bool JsonOutput() { return absl::GetFlag(FLAGS_json); }

int Fail(const std::string& command, const absl::Status& status, int code) {
  std::fprintf(stderr, "eqsim %s: error: %s: %s\n", command.c_str(),
               absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return code;
}

int ExitCodeFor(const absl::Status& status, bool local_input) {
  return local_input ? kExitUsage : kExitRpcError;
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, o);
  return out;
}

absl::StatusOr<v1::BenchmarkFormat> ParseFormat(const std::string& name) {
  std::string up = absl::AsciiStrToUpper(absl::StrReplaceAll(name, {{"-", "_"}}));
  v1::BenchmarkFormat f;
  if (!up.empty() && up != "FORMAT_UNSPECIFIED" && v1::BenchmarkFormat_Parse(up, &f)) return f;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown benchmark format '", name,
      "'; expected one of winoground, eqben-pairs, eqben-video, eqben-ag, eqben-leaderboard, "
      "valse"));
}

std::string FormatName(v1::BenchmarkFormat format) {
  return absl::AsciiStrToLower(
      absl::StrReplaceAll(v1::BenchmarkFormat_Name(format), {{"_", "-"}}));
}

absl::StatusOr<v1::JobState> ParseJobState(const std::string& name) {
  std::string up = absl::AsciiStrToUpper(name);
  v1::JobState s;
  if (!up.empty() && up != "STATE_UNSPECIFIED" && v1::JobState_Parse(up, &s)) return s;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown job state '", name, "'; expected queued, running, succeeded, failed, cancelled"));
}

std::string StateName(v1::JobState state) {
  return absl::AsciiStrToLower(v1::JobState_Name(state));
}

namespace {
std::string Pct(double v) { return absl::StrFormat("%6.2f", 100.0 * v); }
std::string Ms(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(unix_ms),
                          absl::LocalTimeZone());
}
}  // namespace

std::string DescribeEvaluation(const v1::Evaluation& ev, bool with_results) {
  std::string out = absl::StrFormat(
      "evaluation %s: %s\n  model      %s v%d\n  benchmark  %s %s%s\n", ev.id(),
      StateName(ev.state()), ev.model().name().empty() ? ev.spec().model().name() : ev.model().name(),
      ev.model().version(), FormatName(ev.spec().format()), ev.spec().annotation_path(),
      ev.spec().label().empty() ? "" : absl::StrCat("  (", ev.spec().label(), ")"));
  absl::StrAppendFormat(&out, "  progress   %d / %d samples", ev.progress().done(),
                        ev.progress().total());
  if (ev.progress().samples_per_second() > 0)
    absl::StrAppendFormat(&out, ", %.1f samples/s", ev.progress().samples_per_second());
  absl::StrAppendFormat(&out, "\n  created    %s   started %s   finished %s\n",
                        Ms(ev.created_unix_ms()), Ms(ev.started_unix_ms()),
                        Ms(ev.finished_unix_ms()));
  if (!ev.error().empty()) absl::StrAppend(&out, "  error      ", ev.error(), "\n");
  if (!with_results || !ev.has_result()) return out;
  const bool valse = ev.spec().format() == v1::VALSE;
  const bool single = ev.spec().format() == v1::EQBEN_LEADERBOARD;
  absl::StrAppendFormat(&out, "\n  %-28s %8s %8s", "subset", "samples", "skipped");
  if (valse) {
    absl::StrAppend(&out, "  pairwise%\n");
  } else if (!single) {
    absl::StrAppend(&out, "    text%   image%   group%\n");
  } else {
    absl::StrAppend(&out, "\n");
  }
  auto row = [&](const v1::SubsetResult& r, const std::string& name) {
    absl::StrAppendFormat(&out, "  %-28s %8d %8d", name, r.samples(), r.skipped());
    if (valse) {
      absl::StrAppend(&out, "  ", Pct(r.pairwise_accuracy()), "\n");
    } else if (!single) {
      absl::StrAppend(&out, "  ", Pct(r.text_score()), "   ", Pct(r.image_score()), "   ",
                      Pct(r.group_score()), "\n");
    } else {
      absl::StrAppend(&out, "\n");
    }
  };
  for (const auto& r : ev.result().subsets()) row(r, r.subset());
  row(ev.result().overall(), "overall");
  const int shown = std::min(ev.result().skipped_size(), 10);
  for (int i = 0; i < shown; ++i) {
    const auto& s = ev.result().skipped(i);
    absl::StrAppendFormat(&out, "  skipped %s #%d: %s\n", s.subset(), s.index(), s.reason());
  }
  if (ev.result().skipped_size() > shown)
    absl::StrAppendFormat(&out, "  ... %d more skipped\n", ev.result().skipped_size() - shown);
  if (ev.result().has_scores()) absl::StrAppend(&out, "  scores     available (eqsim eval scores ", ev.id(), " --output FILE)\n");
  return out;
}

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)),
      enabled_(absl::GetFlag(FLAGS_progress)),
      tty_(isatty(fileno(stderr)) != 0),
      start_(absl::Now()) {}

ProgressBar::~ProgressBar() { Finish(); }

void ProgressBar::Update(int64_t done, int64_t total, const std::string& suffix) {
  if (!enabled_) return;
  const absl::Time now = absl::Now();
  const bool last = total > 0 && done >= total;
  if (!tty_ && !last && now - last_draw_ < line_every_) return;
  if (tty_ && !last && now - last_draw_ < absl::Milliseconds(100)) return;
  last_draw_ = now;
  const double frac = total > 0 ? std::clamp(static_cast<double>(done) / total, 0.0, 1.0) : 0;
  const double secs = absl::ToDoubleSeconds(now - start_);
  std::string eta = "-";
  if (done > 0 && total > 0 && done < total) {
    eta = absl::StrFormat("%.0fs", secs / done * (total - done));
  }
  std::string line;
  if (total > 0) {
    constexpr int kWidth = 30;
    const int fill = static_cast<int>(frac * kWidth);
    line = absl::StrFormat("%s [%s%s] %5.1f%% %d/%d  %.0fs elapsed, ETA %s", label_,
                           std::string(fill, '#'), std::string(kWidth - fill, '.'), 100 * frac,
                           done, total, secs, eta);
  } else {
    line = absl::StrFormat("%s %d  %.0fs elapsed", label_, done, secs);
  }
  if (!suffix.empty()) absl::StrAppend(&line, "  ", suffix);
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    drawn_ = true;
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

void ProgressBar::Finish() {
  if (drawn_) {
    std::fprintf(stderr, "\n");
    drawn_ = false;
  }
}

void ProgressBar::Note(const std::string& message) {
  if (drawn_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "%s\n", message.c_str());
  drawn_ = false;
  last_draw_ = absl::InfinitePast();
}

}  // namespace eqsim::cli
