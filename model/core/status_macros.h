// Small status helpers: Abseil 20220623 ships no public RETURN_IF_ERROR / ASSIGN_OR_RETURN.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define EQSIM_CONCAT_INNER_(a, b) a##b
#define EQSIM_CONCAT_(a, b) EQSIM_CONCAT_INNER_(a, b)

#define EQSIM_RETURN_IF_ERROR(expr)                  \
  do {                                               \
    ::absl::Status eqsim_status_ = (expr);           \
    if (!eqsim_status_.ok()) return eqsim_status_;   \
  } while (0)

#define EQSIM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

#define EQSIM_ASSIGN_OR_RETURN(lhs, expr) \
  EQSIM_ASSIGN_OR_RETURN_IMPL_(EQSIM_CONCAT_(eqsim_statusor_, __LINE__), lhs, expr)

namespace eqsim {

// Returns `s` with `prefix: ` put in front of its message (code kept), e.g. to say which item.
inline absl::Status Annotate(const absl::Status& s, std::string_view prefix) {
  if (s.ok()) return s;
  return absl::Status(s.code(), std::string(prefix) + ": " + std::string(s.message()));
}

}  // namespace eqsim
