// The one place where absl::Status becomes grpc::Status (and back, for tests and clients).
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace eqsim {

// Canonical codes map one to one (absl and gRPC share the numbering); the message is kept.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace eqsim
