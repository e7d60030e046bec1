#include "client/retry.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"

namespace eqsim {

bool IsRetryableCode(absl::StatusCode code, const RetryOptions& options) {
  switch (code) {
    case absl::StatusCode::kUnavailable:
      return options.retry_unavailable;
    case absl::StatusCode::kResourceExhausted:
      return options.retry_resource_exhausted;
    default:
      return false;
  }
}

namespace {
class RealSleeper : public Sleeper {
 public:
  void Sleep(absl::Duration d) override { absl::SleepFor(d); }
};
}  // namespace

Sleeper* Sleeper::Real() {
  static RealSleeper* sleeper = new RealSleeper();
  return sleeper;
}

Backoff::Backoff(const RetryOptions& options)
    : options_(options), rng_(options.seed != 0 ? options.seed : std::random_device{}()) {}

absl::Duration Backoff::Next() {
  double base = absl::ToDoubleSeconds(options_.initial_backoff) *
                std::pow(std::max(1.0, options_.multiplier), step_);
  const double cap = absl::ToDoubleSeconds(options_.max_backoff);
  base = std::min(base, cap);
  const double j = std::clamp(options_.jitter, 0.0, 1.0);
  std::uniform_real_distribution<double> dist(1.0 - j, 1.0 + j);
  double delay = std::min(base * dist(rng_), cap);
  ++step_;
  return absl::Seconds(std::max(0.0, delay));
}

absl::Status RunWithRetries(const RetryOptions& options, bool idempotent, Sleeper* sleeper,
                            const std::function<absl::Status(int attempt)>& attempt) {
  if (sleeper == nullptr) sleeper = Sleeper::Real();
  const int max_attempts = idempotent ? std::max(1, options.max_attempts) : 1;
  Backoff backoff(options);
  absl::Status status;
  for (int k = 0; k < max_attempts; ++k) {
    if (k > 0) sleeper->Sleep(backoff.Next());
    status = attempt(k);
    if (status.ok() || !IsRetryableCode(status.code(), options)) return status;
  }
  if (max_attempts > 1) {
    return absl::Status(status.code(), absl::StrCat(status.message(), " (gave up after ",
                                                    max_attempts, " attempts)"));
  }
  return status;
}

}  // namespace eqsim
