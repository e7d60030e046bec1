// Splitting a long list of items into requests the server accepts: at most `max_items` items
// and `max_bytes` serialized bytes per request, contiguous and in order, so that the
// responses reassemble by simple concatenation.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace eqsim {

// Bytes a repeated bytes/string/Item field adds per element besides its payload
// (tag, length varint, oneof wrapper): a safe upper bound.
inline constexpr int64_t kPerItemOverheadBytes = 16;

struct ChunkLimits {
  int max_items = 64;                       // items per request
  int64_t max_bytes = (int64_t{64} << 20) - (int64_t{256} << 10);  // payload per request
};

struct Chunk {
  int64_t begin = 0;  // first item
  int64_t end = 0;    // one past the last item
  int64_t bytes = 0;  // payload + per-item overhead
  int64_t size() const { return end - begin; }
};

// Greedy contiguous split of items whose payload sizes are `sizes`. An item that alone
// exceeds max_bytes is an INVALID_ARGUMENT error naming its index and size. No items: no
// chunks.
absl::StatusOr<std::vector<Chunk>> PlanChunks(const std::vector<int64_t>& sizes,
                                              const ChunkLimits& limits);

}  // namespace eqsim
