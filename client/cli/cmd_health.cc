// eqsim health: grpc.health.v1 Check against every target (the Docker HEALTHCHECK, the
// quickstart's "wait until the server is up", exec probes behind a service mesh).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"
#include "client/image_encoding.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "nlohmann/json.hpp"
#ifndef EQSIM_NO_HEALTH_PROTO
#include "grpc/health/v1/health.grpc.pb.h"
#endif

ABSL_FLAG(std::string, service, "",
          "health: service name to check (\"\" = the whole server; e.g. "
          "eqsim.v1.SimilarityService)");
ABSL_FLAG(absl::Duration, wait, absl::ZeroDuration(),
          "health: keep checking until SERVING or this much time has passed (e.g. 60s; 0 = "
          "check once)");
ABSL_FLAG(absl::Duration, wait_interval, absl::Seconds(1),
          "health --wait: pause between two checks");

ABSL_DECLARE_FLAG(bool, progress);

namespace eqsim::cli {
namespace {

// One target's answer. `status` is the grpc.health.v1 status name (SERVING, NOT_SERVING,
// UNKNOWN, SERVICE_UNKNOWN) or, when the RPC failed, UNREACHABLE (no connection / deadline),
// SERVICE_UNKNOWN (NOT_FOUND: no such service) or ERROR (any other gRPC error).
struct HealthAnswer {
  std::string target;
  std::string status;
  std::string error;  // the gRPC error when the RPC failed
  bool serving() const { return status == "SERVING"; }
};

#ifndef EQSIM_NO_HEALTH_PROTO

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> Credentials(const ClientOptions& o) {
  const TlsOptions& tls = o.tls;
  if (!tls.enabled && tls.root_ca_file.empty() && tls.cert_file.empty()) {
    return grpc::InsecureChannelCredentials();
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key must be given together (mTLS)");
  }
  grpc::SslCredentialsOptions ssl;
  const std::pair<const std::string*, std::string*> files[] = {
      {&tls.root_ca_file, &ssl.pem_root_certs},
      {&tls.cert_file, &ssl.pem_cert_chain},
      {&tls.key_file, &ssl.pem_private_key}};
  for (const auto& [path, dest] : files) {
    if (path->empty()) continue;
    auto pem = ReadBinaryFile(*path, int64_t{1} << 24);
    if (!pem.ok()) return pem.status();
    *dest = *std::move(pem);
  }
  return grpc::SslCredentials(ssl);
}

class HealthChecker {
 public:
  static absl::StatusOr<std::unique_ptr<HealthChecker>> Create(const ClientOptions& o) {
    auto creds = Credentials(o);
    if (!creds.ok()) return creds.status();
    auto checker = std::unique_ptr<HealthChecker>(new HealthChecker(o));
    for (const std::string& target : o.targets) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
      // A server that comes up while --wait polls is found within a second.
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      if (!o.tls.server_name_override.empty()) {
        args.SetSslTargetNameOverride(o.tls.server_name_override);
      }
      auto channel = grpc::CreateCustomChannel(target, *creds, args);
      checker->stubs_.push_back(grpc::health::v1::Health::NewStub(channel));
    }
    return checker;
  }

  // Checks every target once; each call gets at most `deadline` (and --timeout).
  std::vector<HealthAnswer> CheckAll(const std::string& service, absl::Duration deadline) {
    std::vector<HealthAnswer> out;
    for (size_t i = 0; i < stubs_.size(); ++i) {
      HealthAnswer a;
      a.target = options_.targets[i];
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + std::min(options_.timeout, deadline)));
      // The server exempts health from the token; sending it is harmless and lets a proxy
      // that does demand it through.
      if (!options_.bearer_token.empty()) {
        ctx.AddMetadata("authorization", absl::StrCat("Bearer ", options_.bearer_token));
      }
      grpc::health::v1::HealthCheckRequest req;
      req.set_service(service);
      grpc::health::v1::HealthCheckResponse resp;
      const grpc::Status s = stubs_[i]->Check(&ctx, req, &resp);
      if (s.ok()) {
        a.status = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
      } else {
        const bool unreachable = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                                 s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
        // The standard health service answers NOT_FOUND for a service it does not know.
        a.status = unreachable                                       ? "UNREACHABLE"
                   : s.error_code() == grpc::StatusCode::NOT_FOUND ? "SERVICE_UNKNOWN"
                                                                   : "ERROR";
        const auto code = static_cast<absl::StatusCode>(s.error_code());
        a.error = absl::StrCat(absl::StatusCodeToString(code), ": ", s.error_message());
      }
      out.push_back(std::move(a));
    }
    return out;
  }

 private:
  explicit HealthChecker(ClientOptions o) : options_(std::move(o)) {}
  ClientOptions options_;
  std::vector<std::unique_ptr<grpc::health::v1::Health::Stub>> stubs_;
};

#endif  // EQSIM_NO_HEALTH_PROTO

std::string Describe(const HealthAnswer& a) {
  return a.error.empty() ? a.status : absl::StrCat(a.status, " (", a.error, ")");
}

int RunHealth(const ParsedArgs& args) {
  const std::string cmd = "health";
  if (!args.positional.empty()) {
    return Fail(cmd, absl::InvalidArgumentError(absl::StrCat("unexpected argument '",
                                                             args.positional[0], "'")),
                kExitUsage);
  }
  const absl::Duration wait = absl::GetFlag(FLAGS_wait);
  const absl::Duration interval = absl::GetFlag(FLAGS_wait_interval);
  if (wait < absl::ZeroDuration()) {
    return Fail(cmd, absl::InvalidArgumentError("--wait must not be negative"), kExitUsage);
  }
  if (interval <= absl::ZeroDuration()) {
    return Fail(cmd, absl::InvalidArgumentError("--wait-interval must be positive"), kExitUsage);
  }
  auto o = ClientOptionsFromFlags();
  if (!o.ok()) return Fail(cmd, o.status(), kExitUsage);
#ifdef EQSIM_NO_HEALTH_PROTO
  return Fail(cmd, absl::UnimplementedError("built without grpc-proto's health.proto"),
              kExitRpcError);
#else
  auto checker = HealthChecker::Create(*o);
  if (!checker.ok()) return Fail(cmd, checker.status(), kExitUsage);
  const std::string service = absl::GetFlag(FLAGS_service);
  const absl::Time start = absl::Now();
  const absl::Time end = start + wait;
  const bool progress = absl::GetFlag(FLAGS_progress);
  std::vector<HealthAnswer> answers;
  std::string last_key;
  absl::Time last_print = absl::InfinitePast();
  while (true) {
    // The last check of a --wait still gets a full --timeout: a slow answer is an answer.
    const absl::Duration left = std::max(end - absl::Now(), absl::Seconds(1));
    answers = (*checker)->CheckAll(service, wait > absl::ZeroDuration() ? left : o->timeout);
    bool all = true;
    for (const auto& a : answers) all = all && a.serving();
    if (all || absl::Now() + interval > end) break;
    if (progress) {
      std::vector<std::string> parts, statuses;
      for (const auto& a : answers) {
        parts.push_back(absl::StrCat(a.target, " ", Describe(a)));
        statuses.push_back(a.status);
      }
      const std::string key = absl::StrJoin(statuses, ",");
      // A line when a status changes, else every 10 s.
      if (key != last_key || absl::Now() - last_print >= absl::Seconds(10)) {
        std::fprintf(stderr, "eqsim health: waiting for SERVING: %s (%.0fs of %s)\n",
                     absl::StrJoin(parts, ", ").c_str(),
                     absl::ToDoubleSeconds(absl::Now() - start),
                     absl::FormatDuration(wait).c_str());
        last_key = key;
        last_print = absl::Now();
      }
    }
    absl::SleepFor(interval);
  }
  bool all = true;
  for (const auto& a : answers) all = all && a.serving();
  const double elapsed_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  if (JsonOutput()) {
    auto one = [&](const HealthAnswer& a) {
      nlohmann::json j = {{"status", a.status}, {"target", a.target}, {"service", service}};
      if (!a.error.empty()) j["error"] = a.error;
      return j;
    };
    nlohmann::json j;
    if (answers.size() == 1) {
      j = one(answers[0]);
    } else {
      // Several targets: SERVING only when every one is; each target's answer listed.
      std::string overall = "SERVING";
      for (const auto& a : answers)
        if (!a.serving()) overall = a.status;
      std::vector<std::string> targets;
      for (const auto& a : answers) targets.push_back(a.target);
      j = {{"status", overall}, {"target", absl::StrJoin(targets, ",")}, {"service", service},
           {"targets", nlohmann::json::array()}};
      for (const auto& a : answers) j["targets"].push_back(one(a));
    }
    j["elapsed_ms"] = static_cast<int64_t>(elapsed_ms);
    std::printf("%s\n", j.dump().c_str());
  } else {
    for (const auto& a : answers) {
      std::printf("%s%s: %s\n", a.target.c_str(),
                  service.empty() ? "" : absl::StrCat(" (", service, ")").c_str(),
                  Describe(a).c_str());
    }
  }
  if (!all && wait > absl::ZeroDuration()) {
    std::fprintf(stderr, "eqsim health: not SERVING after %s\n",
                 absl::FormatDuration(wait).c_str());
  }
  return all ? kExitOk : kExitRpcError;
#endif
}

}  // namespace

std::vector<Command> HealthCommands() {
  return {{"health", "",
           "grpc.health.v1 Check of every target: exit 0 when all are SERVING, 1 otherwise "
           "(NOT_SERVING, UNKNOWN, unreachable)",
           "The server answers NOT_SERVING until its models are loaded and warmed up, while "
           "draining, and after failed inferences. Health is exempt from the bearer token on "
           "the server; --token-file is sent anyway (harmless).\nExamples:\n  eqsim health "
           "--target=localhost:8500                  (Docker HEALTHCHECK)\n  eqsim health "
           "--target=localhost:8500 --wait=60s       (wait for a starting server)\n  eqsim health "
           "--service=eqsim.v1.SimilarityService --json",
           {"service", "wait", "wait_interval"},
           RunHealth}};
}

}  // namespace eqsim::cli
