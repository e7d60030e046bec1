#include "client/chunking.h"

#include "absl/strings/str_cat.h"

namespace eqsim {

absl::StatusOr<std::vector<Chunk>> PlanChunks(const std::vector<int64_t>& sizes,
                                              const ChunkLimits& limits) {
  if (limits.max_items <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max items per request must be positive, got ", limits.max_items));
  }
  if (limits.max_bytes <= kPerItemOverheadBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("max bytes per request is too small: ", limits.max_bytes));
  }
  std::vector<Chunk> chunks;
  Chunk cur;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t item = sizes[i] + kPerItemOverheadBytes;
    if (item > limits.max_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "item ", i, ": ", sizes[i], " bytes does not fit in one request (limit ",
          limits.max_bytes - kPerItemOverheadBytes,
          " bytes; raise --max-message-bytes on both server and client)"));
    }
    if (cur.size() > 0 && (cur.size() >= limits.max_items || cur.bytes + item > limits.max_bytes)) {
      chunks.push_back(cur);
      cur = Chunk{static_cast<int64_t>(i), static_cast<int64_t>(i), 0};
    }
    cur.end = static_cast<int64_t>(i) + 1;
    cur.bytes += item;
  }
  if (cur.size() > 0) chunks.push_back(cur);
  return chunks;
}

}  // namespace eqsim
