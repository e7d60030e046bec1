// The native models' word tokenizer.
//   Normalisation: lower-case (ASCII and the ranges ClipLowercase covers), then split on
//   whitespace; every punctuation / symbol code point (anything not a letter or number) is a
//   token of its own, so "bag," -> "bag" ",".
//   Ids: [PAD]=0 [UNK]=1 [SOS]=2 [EOS]=3, then the vocabulary lines in order (4, 5, ...).
//   A text becomes SOS, its words, EOS; longer than context_length it is cut keeping EOS last;
//   zero padded.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "model/text/tokenizer.h"

namespace eqsim {

inline constexpr int64_t kWordPad = 0;
inline constexpr int64_t kWordUnk = 1;
inline constexpr int64_t kWordSos = 2;
inline constexpr int64_t kWordEos = 3;
inline constexpr int kWordSpecialTokens = 4;
inline constexpr int kWordContextLength = 16;

// Lower-cased words and punctuation tokens of `text` (no validation).
std::vector<std::string> SplitWords(std::string_view text);

class WordTokenizer : public Tokenizer {
 public:
  // One word per line (UTF-8, '\r' tolerated, empty lines rejected); duplicates are an error
  // naming both lines. A file starting with the lines [PAD] [UNK] [SOS] [EOS] is accepted
  // (they are skipped). context_length: 0 = default 16, otherwise >= 3 (SOS, a word, EOS).
  static absl::StatusOr<std::unique_ptr<WordTokenizer>> Load(
      const std::string& path, int context_length = kWordContextLength);
  // Words as given (they should come from BuildVocabulary; a duplicate keeps its first id).
  // context_length <= 0 means the default 16; 1 and 2 are raised to 3.
  static std::unique_ptr<WordTokenizer> FromVocabulary(std::vector<std::string> words,
                                                       int context_length = kWordContextLength);
  // Every SplitWords token of the corpus seen at least min_count times, sorted by byte order
  // (deterministic, independent of corpus order).
  static std::vector<std::string> BuildVocabulary(const std::vector<std::string>& corpus,
                                                  int min_count = 1);

  absl::StatusOr<std::vector<int64_t>> Encode(std::string_view text) const override;
  absl::Status Save(const std::string& path) const;  // one word per line

  int context_length() const override { return context_length_; }
  int vocab_size() const override { return kWordSpecialTokens + static_cast<int>(words_.size()); }
  std::string name() const override;
  const std::vector<std::string>& words() const { return words_; }
  // The id of one (already lower-cased) word, kWordUnk when absent.
  int64_t WordId(std::string_view word) const;

 private:
  WordTokenizer() = default;
  int context_length_ = kWordContextLength;
  std::vector<std::string> words_;
  absl::flat_hash_map<std::string, int64_t> ids_;
};

}  // namespace eqsim
