#include "model/text/clip_bpe.h"

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <iterator>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "model/core/status_macros.h"

namespace eqsim {
namespace {

constexpr int kNumMerges = 49152 - 256 - 2;  // lines [1, 48894] of the merges file
constexpr char kSotText[] = "<|startoftext|>";
constexpr char kEotText[] = "<|endoftext|>";

struct HtmlEntity {
  const char* name;
  char32_t cp1, cp2;  // cp2 = 0 for one-code-point entities
};

#include "model/text/html_entities.inc"

// Entity name (with ';', or without for the legacy forms) -> replacement, as Python's
// html.entities.html5.
const absl::flat_hash_map<std::string, std::u32string>& EntityTable() {
  static const auto* table = [] {
    auto* t = new absl::flat_hash_map<std::string, std::u32string>();
    t->reserve(std::size(kHtmlEntities));
    for (const HtmlEntity& e : kHtmlEntities) {
      std::u32string v(1, e.cp1);
      if (e.cp2 != 0) v.push_back(e.cp2);
      (*t)[e.name] = std::move(v);
    }
    return t;
  }();
  return *table;
}

// Python's html._invalid_charrefs for 0x80..0x9F (cp1252).
constexpr char32_t kCp1252[32] = {
    0x20AC, 0x81,   0x201A, 0x192,  0x201E, 0x2026, 0x2020, 0x2021, 0x2C6,  0x2030, 0x160,
    0x2039, 0x152,  0x8D,   0x17D,  0x8F,   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x2DC,  0x2122, 0x161,  0x203A, 0x153,  0x9D,   0x17E,  0x178};

// Appends the replacement of a numeric reference, with Python's rules.
void AppendNumericRef(uint64_t num, std::u32string* out) {
  if (num == 0) return out->push_back(0xFFFD);
  if (num == 0x0D) return out->push_back('\r');
  if (num >= 0x80 && num <= 0x9F) return out->push_back(kCp1252[num - 0x80]);
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return out->push_back(0xFFFD);
  const bool invalid = (num >= 0x1 && num <= 0x8) || (num >= 0xE && num <= 0x1F) ||
                       (num >= 0x7F && num <= 0x9F) || (num >= 0xFDD0 && num <= 0xFDEF) ||
                       num == 0xB || (num & 0xFFFE) == 0xFFFE;
  if (invalid) return;
  out->push_back(static_cast<char32_t>(num));
}

bool IsAsciiDigit(char32_t c) { return c >= '0' && c <= '9'; }
bool IsHexDigit(char32_t c) {
  return IsAsciiDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int HexValue(char32_t c) {
  return IsAsciiDigit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : c - 'A' + 10;
}
bool IsAsciiAlnum(char32_t c) {
  return IsAsciiDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

std::string ToUtf8(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) AppendUtf8(c, &out);
  return out;
}

// One pass of entity replacement. python_rules: html.unescape (legacy names without ';',
// longest-prefix matching); otherwise ftfy's unescape_html (only "&#?[0-9A-Za-z]{1,24};").
std::u32string Unescape(const std::u32string& s, bool python_rules) {
  if (s.find(U'&') == std::u32string::npos) return s;
  const auto& table = EntityTable();
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    if (s[i] != '&') {
      out.push_back(s[i++]);
      continue;
    }
    const size_t start = i + 1;
    if (!python_rules) {
      // ftfy: &#?[0-9A-Za-z]{1,24};
      size_t j = start;
      if (j < n && s[j] == '#') ++j;
      const size_t name_start = j;
      while (j < n && j - name_start < 24 && IsAsciiAlnum(s[j])) ++j;
      if (j == name_start || j >= n || s[j] != ';') {
        out.push_back(s[i++]);
        continue;
      }
      std::string name;
      for (size_t k = start; k <= j; ++k) name.push_back(static_cast<char>(s[k]));
      if (auto it = table.find(name); it != table.end()) {
        out += it->second;
        i = j + 1;
        continue;
      }
      if (s[start] == '#') {
        // html.unescape of "&#...;"; kept as is when it does not parse as a reference.
        std::u32string sub(s.begin() + i, s.begin() + j + 1);
        std::u32string rep = Unescape(sub, true);
        if (rep.find(U';') == std::u32string::npos) {
          out += rep;
        } else {
          out += sub;
        }
        i = j + 1;
        continue;
      }
      out.push_back(s[i++]);
      continue;
    }
    if (start < n && s[start] == '#') {
      size_t j = start + 1;
      const bool hex = j < n && (s[j] == 'x' || s[j] == 'X');
      if (hex) ++j;
      const size_t digits = j;
      uint64_t num = 0;
      while (j < n && (hex ? IsHexDigit(s[j]) : IsAsciiDigit(s[j]))) {
        const uint64_t d = hex ? HexValue(s[j]) : s[j] - '0';
        num = num > 0x7FFFFFFF ? num : num * (hex ? 16 : 10) + d;  // saturates above U+10FFFF
        ++j;
      }
      if (j == digits) {  // "&#" not followed by digits: not a reference
        out.push_back(s[i++]);
        continue;
      }
      if (j < n && s[j] == ';') ++j;
      AppendNumericRef(num, &out);
      i = j;
      continue;
    }
    // Named: [^\t\n\f <&#;]{1,32};?
    size_t j = start;
    while (j < n && j - start < 32) {
      const char32_t c = s[j];
      if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' ||
          c == ';') {
        break;
      }
      ++j;
    }
    if (j == start) {
      out.push_back(s[i++]);
      continue;
    }
    if (j < n && s[j] == ';') ++j;
    const std::u32string name(s.begin() + start, s.begin() + j);
    const std::string key = ToUtf8(name);
    if (auto it = table.find(key); it != table.end()) {
      out += it->second;
      i = j;
      continue;
    }
    bool found = false;
    for (size_t x = name.size() - 1; x >= 2 && name.size() >= 3; --x) {
      const std::string prefix = ToUtf8(name.substr(0, x));
      if (auto it = table.find(prefix); it != table.end()) {
        out += it->second;
        out.append(name, x, std::u32string::npos);
        found = true;
        break;
      }
    }
    if (!found) {
      out.push_back('&');
      out += name;
    }
    i = j;
  }
  return out;
}

bool IsFtfyControl(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
         (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

std::u32string Strip(const std::u32string& s) {
  size_t b = 0, e = s.size();
  while (b < e && IsPythonSpace(s[b])) ++b;
  while (e > b && IsPythonSpace(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Longest of the contraction alternatives 's 't 're 've 'm 'll 'd at s[i] (in regex order), 0
// when none. IGNORECASE: U+017F (long s) folds to 's'.
size_t MatchContraction(const std::u32string& s, size_t i) {
  if (s[i] != '\'' || i + 1 >= s.size()) return 0;
  const char32_t a = s[i + 1];
  const char32_t b = i + 2 < s.size() ? s[i + 2] : 0;
  if (a == 's' || a == 0x17F || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

bool MatchLiteral(const std::u32string& s, size_t i, const char* lit) {
  for (size_t k = 0; lit[k]; ++k) {
    if (i + k >= s.size() || s[i + k] != static_cast<char32_t>(lit[k])) return false;
  }
  return true;
}

std::vector<std::string> PreTokenize(const std::u32string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    size_t len = 0;
    if (MatchLiteral(s, i, kSotText)) {
      len = sizeof(kSotText) - 1;
    } else if (MatchLiteral(s, i, kEotText)) {
      len = sizeof(kEotText) - 1;
    } else if ((len = MatchContraction(s, i)) > 0) {
    } else if (IsUnicodeLetter(s[i])) {
      len = 1;
      while (i + len < n && IsUnicodeLetter(s[i + len])) ++len;
    } else if (IsUnicodeNumber(s[i])) {
      len = 1;
    } else if (!IsUnicodeSpace(s[i])) {
      len = 1;
      while (i + len < n && !IsUnicodeSpace(s[i + len]) && !IsUnicodeLetter(s[i + len]) &&
             !IsUnicodeNumber(s[i + len])) {
        ++len;
      }
    } else {
      ++i;  // whitespace: no match here
      continue;
    }
    out.push_back(ToUtf8(s.substr(i, len)));
    i += len;
  }
  return out;
}

absl::StatusOr<std::u32string> DecodeToU32(std::string_view text) {
  EQSIM_ASSIGN_OR_RETURN(std::vector<char32_t> cps, DecodeUtf8(text));
  return std::u32string(cps.begin(), cps.end());
}

absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::string out;
  char buf[1 << 16];
  while (true) {
    const int got = gzread(f, buf, sizeof(buf));
    if (got < 0) {
      int err = 0;
      const std::string msg = gzerror(f, &err);
      gzclose(f);
      return absl::DataLossError(absl::StrCat(path, ": read error (", msg, ")"));
    }
    if (got == 0) break;
    out.append(buf, got);
    if (out.size() > (256u << 20)) {
      gzclose(f);
      return absl::InvalidArgumentError(absl::StrCat(path, ": larger than 256 MiB"));
    }
  }
  gzclose(f);
  return out;
}

}  // namespace

std::u32string HtmlUnescape(const std::u32string& text) { return Unescape(text, true); }

std::u32string FtfyLite(const std::u32string& text) {
  std::u32string s = text.find(U'<') == std::u32string::npos ? Unescape(text, false) : text;
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (IsFtfyControl(c) && c != '\t' && c != '\n' && c != '\r' && c != '\f') continue;
    switch (c) {  // Latin ligatures (ftfy.fix_latin_ligatures)
      case 0x132: out += U"IJ"; continue;
      case 0x133: out += U"ij"; continue;
      case 0x149: out += U"\u02BCn"; continue;
      case 0x1F1: out += U"DZ"; continue;
      case 0x1F2: out += U"Dz"; continue;
      case 0x1F3: out += U"dz"; continue;
      case 0x1C4: out += U"D\u017D"; continue;
      case 0x1C5: out += U"D\u017E"; continue;
      case 0x1C6: out += U"d\u017E"; continue;
      case 0x1C7: out += U"LJ"; continue;
      case 0x1C8: out += U"Lj"; continue;
      case 0x1C9: out += U"lj"; continue;
      case 0x1CA: out += U"NJ"; continue;
      case 0x1CB: out += U"Nj"; continue;
      case 0x1CC: out += U"nj"; continue;
      case 0xFB00: out += U"ff"; continue;
      case 0xFB01: out += U"fi"; continue;
      case 0xFB02: out += U"fl"; continue;
      case 0xFB03: out += U"ffi"; continue;
      case 0xFB04: out += U"ffl"; continue;
      case 0xFB05: out += U"\u017Ft"; continue;
      case 0xFB06: out += U"st"; continue;
      default: break;
    }
    out.push_back(c);
  }
  std::u32string width_fixed;  // fix_character_width
  width_fixed.reserve(out.size());
  for (char32_t c : out) AppendWidthFixed(c, &width_fixed);
  for (char32_t& c : width_fixed) {  // uncurl_quotes
    if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
    else if (c >= 0x201C && c <= 0x201F) c = '"';
  }
  return Nfc(width_fixed);  // ftfy's normalization="NFC"
}

absl::StatusOr<std::string> ClipCleanText(std::string_view text) {
  EQSIM_ASSIGN_OR_RETURN(std::u32string s, DecodeToU32(text));
  s = FtfyLite(s);
  s = Strip(HtmlUnescape(HtmlUnescape(s)));
  std::u32string collapsed;
  collapsed.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (IsUnicodeSpace(s[i])) {
      collapsed.push_back(' ');
      while (i < s.size() && IsUnicodeSpace(s[i])) ++i;
    } else {
      collapsed.push_back(s[i++]);
    }
  }
  return ToUtf8(PyLower(Strip(collapsed)));
}

std::vector<std::string> ClipPreTokenize(std::string_view cleaned) {
  auto s = DecodeToU32(cleaned);
  if (!s.ok()) return {};
  return PreTokenize(*s);
}

absl::StatusOr<std::unique_ptr<ClipBpeTokenizer>> ClipBpeTokenizer::Load(
    const std::string& merges_path, int context_length) {
  if (context_length < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("CLIP context_length must be >= 2 (SOT and EOT), got ", context_length));
  }
  EQSIM_ASSIGN_OR_RETURN(std::string content, ReadMaybeGzip(merges_path));
  std::vector<absl::string_view> lines = absl::StrSplit(content, '\n');
  if (static_cast<int>(lines.size()) < kNumMerges + 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        merges_path, ": has ", lines.size(), " lines, a CLIP merges file needs at least ",
        kNumMerges + 1, " (a version line and ", kNumMerges, " merges)"));
  }
  std::unique_ptr<ClipBpeTokenizer> t(new ClipBpeTokenizer());
  t->context_length_ = context_length;
  // bytes_to_unicode(): printable bytes map to themselves, the rest to 256 + n.
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<int> cs = bs;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + extra++);
    }
  }
  t->byte_encoder_.assign(256, "");
  t->byte_decoder_.assign(512, -1);
  std::vector<std::string> vocab;
  vocab.reserve(kClipVocabSize);
  for (size_t k = 0; k < bs.size(); ++k) {
    std::string u;
    AppendUtf8(static_cast<char32_t>(cs[k]), &u);
    t->byte_encoder_[bs[k]] = u;
    t->byte_decoder_[cs[k]] = bs[k];
    vocab.push_back(u);  // vocab order is bs order (dict insertion order)
  }
  for (size_t k = 0; k < 256; ++k) vocab.push_back(vocab[k] + "</w>");
  t->bpe_ranks_.reserve(kNumMerges);
  for (int k = 0; k < kNumMerges; ++k) {
    const absl::string_view line = lines[k + 1];
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(merges_path, ": line ", k + 2,
                                                     ": expected two symbols, got '", line, "'"));
    }
    t->bpe_ranks_.emplace(absl::StrCat(parts[0], " ", parts[1]), k);
    vocab.push_back(absl::StrCat(parts[0], parts[1]));
  }
  vocab.push_back(kSotText);
  vocab.push_back(kEotText);
  t->encoder_.reserve(vocab.size());
  for (size_t id = 0; id < vocab.size(); ++id) t->encoder_[vocab[id]] = static_cast<int64_t>(id);
  t->decoder_ = std::move(vocab);
  return t;
}

std::string ClipBpeTokenizer::name() const {
  return absl::StrCat("clip-bpe (", kClipVocabSize, " ids, context ", context_length_, ")");
}

size_t ClipBpeTokenizer::cache_size() const {
  absl::ReaderMutexLock lock(&cache_mu_);
  return cache_.size();
}

void ClipBpeTokenizer::Bpe(const std::string& token, std::vector<int64_t>* out) const {
  if (token == kSotText || token == kEotText) {
    out->push_back(token == kSotText ? kClipSot : kClipEot);
    return;
  }
  {
    absl::ReaderMutexLock lock(&cache_mu_);
    if (auto it = cache_.find(token); it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  // Split into code points (the byte stand-ins), last one with "</w>".
  std::vector<std::string> word;
  for (size_t i = 0; i < token.size();) {
    size_t len = 1;
    const unsigned char c = token[i];
    if (c >= 0xC0) len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    word.emplace_back(token.substr(i, len));
    i += len;
  }
  if (word.empty()) return;
  word.back() += "</w>";
  std::string key;
  while (word.size() > 1) {
    int best_rank = INT_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      key.assign(word[i]).append(" ").append(word[i + 1]);
      if (auto it = bpe_ranks_.find(key); it != bpe_ranks_.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == INT_MAX) break;
    const std::string first = word[best], second = word[best + 1];
    std::vector<std::string> merged;
    merged.reserve(word.size());
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(std::move(word[i]));
        i += 1;
      }
    }
    word = std::move(merged);
  }
  std::vector<int64_t> ids;
  ids.reserve(word.size());
  for (const std::string& sym : word) {
    auto it = encoder_.find(sym);
    ids.push_back(it != encoder_.end() ? it->second : 0);  // every BPE symbol is in the vocab
  }
  out->insert(out->end(), ids.begin(), ids.end());
  absl::WriterMutexLock lock(&cache_mu_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_.emplace(token, std::move(ids));
}

absl::StatusOr<std::vector<int64_t>> ClipBpeTokenizer::EncodeRaw(std::string_view text) const {
  return EncodeUpTo(text, std::numeric_limits<size_t>::max());
}

absl::StatusOr<std::vector<int64_t>> ClipBpeTokenizer::EncodeUpTo(std::string_view text,
                                                                  size_t max_ids) const {
  EQSIM_ASSIGN_OR_RETURN(std::string cleaned, ClipCleanText(text));
  EQSIM_ASSIGN_OR_RETURN(std::u32string cps, DecodeToU32(cleaned));
  std::vector<int64_t> ids;
  std::string encoded;
  for (const std::string& piece : PreTokenize(cps)) {
    if (ids.size() >= max_ids) break;  // the rest would be truncated away
    encoded.clear();
    for (unsigned char b : piece) encoded += byte_encoder_[b];
    Bpe(encoded, &ids);
  }
  return ids;
}

absl::StatusOr<std::vector<int64_t>> ClipBpeTokenizer::EncodeAllowEmpty(std::string_view text) const {
  EQSIM_ASSIGN_OR_RETURN(std::vector<int64_t> raw, EncodeUpTo(text, context_length_ - 2));
  std::vector<int64_t> ids(context_length_, 0);
  ids[0] = kClipSot;
  const size_t body = std::min(raw.size(), static_cast<size_t>(context_length_ - 2));
  std::copy(raw.begin(), raw.begin() + body, ids.begin() + 1);
  ids[body + 1] = kClipEot;
  return ids;
}

absl::StatusOr<std::vector<int64_t>> ClipBpeTokenizer::Encode(std::string_view text) const {
  EQSIM_RETURN_IF_ERROR(ValidateText(text, kNoTextByteLimit));
  return EncodeAllowEmpty(text);
}

std::string ClipBpeTokenizer::Decode(const std::vector<int64_t>& ids) const {
  std::string joined;
  size_t end = ids.size();
  while (end > 0 && ids[end - 1] == 0) --end;  // padding (id 0 is also "!" inside text)
  for (size_t k = 0; k < end; ++k) {
    const int64_t id = ids[k];
    if (id == kClipSot || id == kClipEot) continue;
    if (id < 0 || id >= static_cast<int64_t>(decoder_.size())) continue;
    joined += decoder_[id];
  }
  std::string out;
  auto cps = DecodeToU32(joined);
  if (!cps.ok()) return out;
  const std::u32string end_of_word = U"</w>";
  for (size_t i = 0; i < cps->size(); ++i) {
    if (cps->compare(i, end_of_word.size(), end_of_word) == 0) {
      out.push_back(' ');
      i += end_of_word.size() - 1;
      continue;
    }
    const char32_t c = (*cps)[i];
    if (c < byte_decoder_.size() && byte_decoder_[c] >= 0) out.push_back(static_cast<char>(byte_decoder_[c]));
  }
  return out;
}

}  // namespace eqsim
