// CLIP's byte-level BPE tokenizer, reimplemented after OpenAI's simple_tokenizer.py.
//
// Vocabulary: the 256 byte symbols, the same with "</w>", the first 48894 merges of
// bpe_simple_vocab_16e6.txt.gz (lines 1 .. 49152-256-2 after the version line), then
// <|startoftext|> = 49406 and <|endoftext|> = 49407: 49408 ids.
//
// Text cleaning. The original runs ftfy.fix_text, then html.unescape twice, strip, collapse
// whitespace, lower(). ftfy is not available; we reproduce the parts of its default pipeline
// that matter for captions and skip the rest:
//   done:    HTML unescape when the text holds no '<' (ftfy's unescape_html="auto"), removal of
//            control characters (C0 except \t\n\r\f, DEL, U+206A-206F, BOM, U+FFF9-FFFC),
//            Latin ligatures (U+FB00-FB06, IJ/DZ/LJ/NJ digraphs), character width (U+3000 and
//            U+FF01..U+FFEF to their NFKC forms: fullwidth ASCII, halfwidth katakana / hangul),
//            curly quotes to ' and ", and NFC normalisation (model/text/unicode.h).
//   skipped: mojibake repair (fix_encoding), C1 controls read as cp1252.
// Then, as the original: HTML entities unescaped twice with Python's html.unescape rules
// (numeric references, all 2231 HTML5 named entities incl. the legacy no-semicolon forms and
// longest-prefix matching; table generated from html.entities), whitespace runs to one space,
// strip, PyLower (model/text/unicode.h).
//
// Pre-tokenisation follows CLIP's regex
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// implemented by hand over code points, with \p{L} / \p{N} / \s from tables generated from
// Python's unicodedata (Unicode 14; see model/text/unicode.h). Only code points assigned after
// Unicode 14 may be classified differently from the `regex` module.
//
// BPE results are cached per pre-token (bounded, cleared when full; thread-safe). Encode stops
// running BPE once the context is full. Verified against all 25 reference id lists in
// ../shared/data/clip/tokenizer_golden.jsonl (tests/model/clip_tokenizer_test.cc).
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
#include "model/text/unicode.h"

namespace eqsim {

inline constexpr int kClipVocabSize = 49408;
inline constexpr int64_t kClipSot = 49406;
inline constexpr int64_t kClipEot = 49407;
inline constexpr int kClipContextLength = 77;

// Text cleaning steps on code points, exposed for tests and other tokenizers.
std::u32string HtmlUnescape(const std::u32string& text);  // one pass of Python's html.unescape
std::u32string FtfyLite(const std::u32string& text);      // see the file comment
// The whole cleaning of CLIP's encode(): FtfyLite, unescape x2, whitespace collapse, strip,
// lower. Returns UTF-8; InvalidArgument on invalid UTF-8.
absl::StatusOr<std::string> ClipCleanText(std::string_view text);
// The pieces CLIP's regex finds in cleaned UTF-8 text.
std::vector<std::string> ClipPreTokenize(std::string_view cleaned);

class ClipBpeTokenizer : public Tokenizer {
 public:
  // Loads the merges file (gzip or plain text). Errors name the path and the line.
  static absl::StatusOr<std::unique_ptr<ClipBpeTokenizer>> Load(
      const std::string& merges_path, int context_length = kClipContextLength);

  // ValidateText, then EncodeAllowEmpty.
  absl::StatusOr<std::vector<int64_t>> Encode(std::string_view text) const override;
  // Exactly open_clip's tokenize(): SOT + ids + EOT, cut to context_length keeping EOT last,
  // zero padded; empty / whitespace-only text gives [SOT, EOT, 0...]. Checks UTF-8 only.
  absl::StatusOr<std::vector<int64_t>> EncodeAllowEmpty(std::string_view text) const;
  // The ids without SOT / EOT / padding or truncation (simple_tokenizer.encode). UTF-8 only.
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
  // EncodeRaw that stops running BPE once max_ids ids are produced.
  absl::StatusOr<std::vector<int64_t>> EncodeUpTo(std::string_view text, size_t max_ids) const;

  int context_length_ = kClipContextLength;
  std::vector<std::string> byte_encoder_;  // byte -> UTF-8 of its printable stand-in
  std::vector<int> byte_decoder_;          // stand-in code point -> byte (-1: none)
  absl::flat_hash_map<std::string, int64_t> encoder_;
  std::vector<std::string> decoder_;       // id -> token string
  absl::flat_hash_map<std::string, int> bpe_ranks_;  // "first second" -> rank
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int64_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace eqsim
