// CLIP's byte-level BPE tokenizer, reimplemented after OpenAI's simple_tokenizer.py.
//
// Vocabulary: the 256 byte symbols, the same with "</w>", the first 48894 merges of
// bpe_simple_vocab_16e6.txt.gz (lines 1 .. 49152-256-2 after the version line), then
// <|startoftext|> = 49406 and <|endoftext|> = 49407: 49408 ids.
//
// Text cleaning differs from the original in one documented way: ftfy.fix_text (mojibake
// repair) is not available, so text is taken as already-correct UTF-8. Otherwise: HTML
// entities are unescaped twice (all numeric entities and the common named ones: amp lt gt quot
// apos nbsp and ~100 Latin-1 / typographic names), whitespace runs collapse to one space, the
// ends are stripped, the text is lower-cased (ASCII, Latin-1, Latin Extended-A, Greek and
// Cyrillic; other scripts are left as they are).
//
// Pre-tokenisation follows CLIP's regex
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// implemented by hand over code points. The letter / number classifier covers Latin, Greek,
// Cyrillic, Armenian, Hebrew, Arabic, Devanagari and other Indic scripts, Thai, Hangul,
// Hiragana, Katakana, CJK ideographs and their extensions, and the Unicode digit blocks;
// code points outside these ranges count as neither (they become symbols), which can differ
// from the `regex` module for rare scripts.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "model/text/tokenizer.h"

namespace eqsim {

inline constexpr int kClipVocabSize = 49408;
inline constexpr int64_t kClipSot = 49406;
inline constexpr int64_t kClipEot = 49407;
inline constexpr int kClipContextLength = 77;

// Text cleaning steps, exposed for tests and other tokenizers.
std::string HtmlUnescape(std::string_view text);        // one pass
std::string CollapseWhitespace(std::string_view text);  // runs -> ' ', stripped
std::string ClipLowercase(std::string_view utf8);       // see file comment for coverage
bool IsUnicodeLetter(char32_t cp);
bool IsUnicodeNumber(char32_t cp);
bool IsUnicodeSpace(char32_t cp);
// The pieces CLIP's regex would find in already-cleaned text (tests and debugging).
std::vector<std::string> ClipPreTokenize(std::string_view cleaned);

class ClipBpeTokenizer : public Tokenizer {
 public:
  // Loads the merges file (gzip or plain text). Errors name the path and the line.
  static absl::StatusOr<std::unique_ptr<ClipBpeTokenizer>> Load(
      const std::string& merges_path, int context_length = kClipContextLength);

  absl::StatusOr<std::vector<int64_t>> Encode(std::string_view text) const override;
  // The ids without SOT / EOT / padding or truncation (validates the text).
  absl::StatusOr<std::vector<int64_t>> EncodeRaw(std::string_view text) const;
  // ids -> text, as simple_tokenizer.decode (SOT/EOT/0 padding dropped).
  std::string Decode(const std::vector<int64_t>& ids) const;

  int context_length() const override { return context_length_; }
  int vocab_size() const override { return kClipVocabSize; }
  std::string name() const override;

  // How many words the BPE cache holds (bounded by max_cache_entries).
  size_t cache_size() const;
  static constexpr size_t kMaxCacheEntries = 1 << 16;

 private:
  ClipBpeTokenizer() = default;
  // BPE of one pre-token (already byte-encoded) -> ids; cached.
  void Bpe(const std::string& word_bytes, std::vector<int64_t>* out) const;

  int context_length_ = kClipContextLength;
  std::vector<std::string> byte_encoder_;  // byte -> UTF-8 of its printable stand-in
  absl::flat_hash_map<std::string, int64_t> encoder_;
  std::vector<std::string> decoder_;       // id -> token string
  absl::flat_hash_map<std::string, int64_t> decoder_bytes_;  // stand-in char -> byte
  absl::flat_hash_map<std::string, int> bpe_ranks_;  // "first second" -> rank
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int64_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace eqsim
