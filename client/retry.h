// Retry policy of the eqsim client: exponential backoff with jitter for transient gRPC
// failures (UNAVAILABLE, and RESOURCE_EXHAUSTED: a full model queue) on idempotent calls.
// The clock/sleeper is injectable so the policy is testable without waiting.
#pragma once

#include <cstdint>
#include <functional>
#include <random>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace eqsim {

struct RetryOptions {
  // Total attempts including the first; 1 disables retries.
  int max_attempts = 5;
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  double multiplier = 2.0;
  // Each delay is multiplied by a uniform factor in [1 - jitter, 1 + jitter] (then capped at
  // max_backoff), so that many clients hit by the same outage do not retry in lock-step.
  double jitter = 0.2;
  bool retry_unavailable = true;
  bool retry_resource_exhausted = true;
  // Seed of the jitter generator; 0 = random.
  uint64_t seed = 0;
};

// Whether `code` is transient under `options` (never true for OK).
bool IsRetryableCode(absl::StatusCode code, const RetryOptions& options);

// Sleeps; the default one really sleeps, tests record the requested delays instead.
class Sleeper {
 public:
  virtual ~Sleeper() = default;
  virtual void Sleep(absl::Duration d) = 0;
  // A process-wide sleeper that calls absl::SleepFor.
  static Sleeper* Real();
};

// The sequence of delays: initial * multiplier^k, jittered, capped at max_backoff.
class Backoff {
 public:
  explicit Backoff(const RetryOptions& options);
  // The delay before retry number `retries_so_far + 1`; advances the sequence.
  absl::Duration Next();
  void Reset() { step_ = 0; }
  int step() const { return step_; }

 private:
  RetryOptions options_;
  int step_ = 0;
  std::mt19937_64 rng_;
};

// Calls `attempt(k)` (k = 0, 1, ...) until it returns OK, a non-retryable error, or
// max_attempts attempts were made; sleeps Backoff::Next() between attempts. When
// `idempotent` is false it makes exactly one attempt. Returns the last attempt's status;
// when retries were exhausted, the message says how many attempts were made.
absl::Status RunWithRetries(const RetryOptions& options, bool idempotent, Sleeper* sleeper,
                            const std::function<absl::Status(int attempt)>& attempt);

}  // namespace eqsim
