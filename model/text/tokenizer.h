// Tokenizers turn captions into fixed-length id rows (torch-free).
//   CLIP_BPE: CLIP's byte-level BPE (model/text/clip_bpe.h), 49408 ids, context 77.
//   WORD:     the native models' word vocabulary (model/text/word_tokenizer.h), context 16.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "eqsim/config/model_config.pb.h"
#include "model/core/tensor.h"

namespace eqsim {

// Default maximum caption length in bytes accepted by ValidateText.
inline constexpr int64_t kDefaultMaxTextBytes = 64 * 1024;
inline constexpr int64_t kNoTextByteLimit = std::numeric_limits<int64_t>::max();

// OK, or InvalidArgument: "text is empty", "text is only whitespace",
// "text is not valid UTF-8 (invalid byte 0xff at offset 3)",
// "text is 70000 bytes, over the limit of 65536".
absl::Status ValidateText(std::string_view text, int64_t max_bytes = kDefaultMaxTextBytes);

// Decodes UTF-8 into code points (after ValidateText-style checking of the encoding only).
// InvalidArgument "text is not valid UTF-8 (...)" on malformed input.
absl::StatusOr<std::vector<char32_t>> DecodeUtf8(std::string_view text);
void AppendUtf8(char32_t cp, std::string* out);

class Tokenizer {
 public:
  virtual ~Tokenizer();

  // The ids of one text, zero padded to context_length(). Validates the text first (empty,
  // whitespace-only, invalid UTF-8); a byte-size limit is the caller's policy (ValidateText's
  // max_bytes, e.g. the server's --max_text_bytes), Encode itself accepts any length.
  virtual absl::StatusOr<std::vector<int64_t>> Encode(std::string_view text) const = 0;

  // Encode for each text into one [n, context_length()] batch. Errors are prefixed with the
  // item: "text 3: text is empty". An empty list gives an empty batch (n = 0).
  absl::StatusOr<TokenBatch> EncodeBatch(const std::vector<std::string>& texts) const;

  virtual int context_length() const = 0;
  virtual int vocab_size() const = 0;
  // e.g. "clip-bpe (49408 ids, context 77)" or "word (1234 ids, context 16)".
  virtual std::string name() const = 0;
};

// Builds the tokenizer of a model config. `cfg.vocab_file` (required for both kinds) is used
// as is when absolute, otherwise looked up in `search_dirs` in order (first existing wins).
// Errors name the file and every directory tried. context_length 0 means the kind's default;
// otherwise it must be in [2, 4096] (CLIP: the model's positional table decides, usually 77).
absl::StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizer(
    const config::TokenizerConfig& cfg, const std::vector<std::string>& search_dirs);

}  // namespace eqsim
