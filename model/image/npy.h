// NumPy .npy reading and writing (format versions 1.0, 2.0 and 3.0), torch-free.
// Used for EqBen YouCook2 frames (uint8 H x W x 3) and for the leaderboard score files
// (1-D float32) the benchmark writes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace eqsim {

struct NpyArray {
  std::string dtype;           // the descr string as written: "<f4", "|u1", "<i8", ...
  std::vector<int64_t> shape;  // empty for a 0-d array
  bool fortran_order = false;
  std::string data;            // raw bytes, exactly num_elements() * item_size()

  int64_t num_elements() const;  // product of shape (1 for a 0-d array)
  int item_size() const;         // bytes per element, from the dtype ("<f4" -> 4)
};

// Parses a whole .npy file. Errors ("bad magic (first bytes: ...)", "unsupported format
// version 4.0", "header is not a valid dict: ...", "unsupported dtype '>c16'",
// "data is truncated: 100 bytes, shape (10, 10, 3) of |u1 needs 300", ...) are
// InvalidArgument; `name` (a path or label) prefixes them.
absl::StatusOr<NpyArray> ReadNpy(std::string_view bytes, std::string_view name = "npy");
// Reads the file (NotFound if it cannot be opened) and parses it; errors name the path.
absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path);

// Serialises an array (version 1.0 unless the header needs 2.0). `array.data` must hold
// num_elements() * item_size() bytes.
absl::StatusOr<std::string> WriteNpy(const NpyArray& array);
// A C-order float32 ("<f4") array of `shape`; data.size() must equal the product of shape.
absl::StatusOr<std::string> WriteNpyFloat32(const std::vector<int64_t>& shape,
                                            const std::vector<float>& data);
// Writes bytes to `path` (errors name the path).
absl::Status WriteNpyFile(const std::string& path, std::string_view npy_bytes);

// Interprets a "<f4" (or "=f4" / "float32" little-endian host) array as floats.
absl::StatusOr<std::vector<float>> NpyAsFloat32(const NpyArray& array);

}  // namespace eqsim
