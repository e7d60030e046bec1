#include "model/text/tokenizer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "model/core/status_macros.h"
#include "model/text/clip_bpe.h"
#include "model/text/unicode.h"
#include "model/text/word_tokenizer.h"

namespace eqsim {
namespace {

absl::Status Utf8Error(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("text is not valid UTF-8 (", std::string(what), ")"));
}

}  // namespace

absl::StatusOr<std::vector<char32_t>> DecodeUtf8(std::string_view text) {
  std::vector<char32_t> out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char b = s[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int len;
    char32_t cp, min;
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2, cp = b & 0x1F, min = 0x80;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3, cp = b & 0x0F, min = 0x800;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4, cp = b & 0x07, min = 0x10000;
    } else {
      return Utf8Error(absl::StrFormat("invalid byte 0x%02x at offset %d", b, i));
    }
    if (i + len > n) {
      return Utf8Error(absl::StrFormat("truncated %d-byte sequence at offset %d", len, i));
    }
    for (int k = 1; k < len; ++k) {
      const unsigned char c = s[i + k];
      if ((c & 0xC0) != 0x80) {
        return Utf8Error(absl::StrFormat("invalid byte 0x%02x at offset %d", c, i + k));
      }
      cp = (cp << 6) | (c & 0x3F);
    }
    if (cp < min) return Utf8Error(absl::StrFormat("overlong encoding at offset %d", i));
    if (cp >= 0xD800 && cp <= 0xDFFF) {
      return Utf8Error(absl::StrFormat("surrogate U+%04X at offset %d", static_cast<uint32_t>(cp), i));
    }
    if (cp > 0x10FFFF) {
      return Utf8Error(absl::StrFormat("code point above U+10FFFF at offset %d", i));
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

absl::Status ValidateText(std::string_view text, int64_t max_bytes) {
  if (text.empty()) return absl::InvalidArgumentError("text is empty");
  if (static_cast<int64_t>(text.size()) > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is ", text.size(), " bytes, over the limit of ", max_bytes));
  }
  EQSIM_ASSIGN_OR_RETURN(std::vector<char32_t> cps, DecodeUtf8(text));
  for (char32_t c : cps) {
    if (!IsPythonSpace(c)) return absl::OkStatus();
  }
  return absl::InvalidArgumentError("text is only whitespace");
}

Tokenizer::~Tokenizer() = default;

absl::StatusOr<TokenBatch> Tokenizer::EncodeBatch(const std::vector<std::string>& texts) const {
  TokenBatch batch;
  batch.n = static_cast<int64_t>(texts.size());
  batch.length = context_length();
  batch.ids.reserve(texts.size() * static_cast<size_t>(batch.length));
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = Encode(texts[i]);
    if (!ids.ok()) return Annotate(ids.status(), absl::StrCat("text ", i));
    if (static_cast<int>(ids->size()) != batch.length) {
      return absl::InternalError(absl::StrCat("text ", i, ": tokenizer produced ", ids->size(),
                                              " ids, expected ", batch.length));
    }
    batch.ids.insert(batch.ids.end(), ids->begin(), ids->end());
  }
  return batch;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateTokenizer(
    const config::TokenizerConfig& cfg, const std::vector<std::string>& search_dirs) {
  namespace fs = std::filesystem;
  const int ctx = cfg.context_length();
  if (ctx != 0 && (ctx < 2 || ctx > 4096)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.context_length must be 0 (default) or in [2, 4096], got ", ctx));
  }
  if (cfg.kind() != config::TokenizerConfig::CLIP_BPE &&
      cfg.kind() != config::TokenizerConfig::WORD) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.kind must be CLIP_BPE or WORD, got ",
        config::TokenizerConfig::Kind_Name(cfg.kind()).empty()
            ? absl::StrCat(static_cast<int>(cfg.kind()))
            : config::TokenizerConfig::Kind_Name(cfg.kind())));
  }
  if (cfg.vocab_file().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer.vocab_file is required for ", config::TokenizerConfig::Kind_Name(cfg.kind()),
        cfg.kind() == config::TokenizerConfig::CLIP_BPE ? " (bpe_simple_vocab_16e6.txt.gz)"
                                                        : " (one word per line)"));
  }
  std::string path;
  std::error_code ec;
  const fs::path file(cfg.vocab_file());
  std::vector<std::string> tried;
  if (file.is_absolute()) {
    tried.push_back(file.string());
    if (fs::is_regular_file(file, ec)) path = file.string();
  } else {
    for (const std::string& dir : search_dirs) {
      const fs::path candidate = fs::path(dir) / file;
      tried.push_back(candidate.string());
      if (fs::is_regular_file(candidate, ec)) {
        path = candidate.string();
        break;
      }
    }
  }
  if (path.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "tokenizer.vocab_file '", cfg.vocab_file(), "' not found; tried: ",
        tried.empty() ? std::string("(no search directories)") : absl::StrJoin(tried, ", ")));
  }
  if (cfg.kind() == config::TokenizerConfig::CLIP_BPE) {
    EQSIM_ASSIGN_OR_RETURN(auto tok, ClipBpeTokenizer::Load(path, ctx == 0 ? kClipContextLength : ctx));
    return std::unique_ptr<Tokenizer>(std::move(tok));
  }
  if (ctx != 0 && ctx < 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.context_length must be >= 3 for WORD, got ", ctx));
  }
  EQSIM_ASSIGN_OR_RETURN(auto tok, WordTokenizer::Load(path, ctx == 0 ? kWordContextLength : ctx));
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

}  // namespace eqsim
