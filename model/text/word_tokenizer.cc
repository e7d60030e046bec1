#include "model/text/word_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "model/core/status_macros.h"
#include "model/text/unicode.h"

namespace eqsim {
namespace {

constexpr const char* kSpecialNames[kWordSpecialTokens] = {"[PAD]", "[UNK]", "[SOS]", "[EOS]"};

}  // namespace

std::vector<std::string> SplitWords(std::string_view text) {
  std::vector<std::string> out;
  auto decoded = DecodeUtf8(text);
  if (!decoded.ok()) return out;
  const std::u32string lower = PyLower(std::u32string(decoded->begin(), decoded->end()));
  std::string word;
  auto flush = [&] {
    if (!word.empty()) out.push_back(std::move(word));
    word.clear();
  };
  for (char32_t c : lower) {
    if (IsPythonSpace(c)) {
      flush();
    } else if (IsUnicodeLetter(c) || IsUnicodeNumber(c)) {
      AppendUtf8(c, &word);
    } else {
      flush();
      std::string punct;
      AppendUtf8(c, &punct);
      out.push_back(std::move(punct));
    }
  }
  flush();
  return out;
}

absl::StatusOr<std::unique_ptr<WordTokenizer>> WordTokenizer::Load(const std::string& path,
                                                                   int context_length) {
  if (context_length == 0) context_length = kWordContextLength;
  if (context_length < 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "word tokenizer context_length must be >= 3 (SOS, a word, EOS), got ", context_length));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open vocabulary file"));
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string content = ss.str();
  std::vector<absl::string_view> lines = absl::StrSplit(content, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();  // final newline
  // Files that spell out the four special tokens first are accepted as well.
  size_t first = 0;
  if (lines.size() >= kWordSpecialTokens) {
    bool specials = true;
    for (int k = 0; k < kWordSpecialTokens; ++k) {
      absl::string_view l = lines[k];
      if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
      specials = specials && l == absl::string_view(kSpecialNames[k]);
    }
    if (specials) first = kWordSpecialTokens;
  }
  std::vector<std::string> words;
  absl::flat_hash_map<std::string, size_t> seen;
  for (size_t i = first; i < lines.size(); ++i) {
    absl::string_view l = lines[i];
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    const std::string where = absl::StrCat(path, ": line ", i + 1);
    if (l.empty()) return absl::InvalidArgumentError(absl::StrCat(where, " is empty"));
    auto cps = DecodeUtf8(std::string_view(l.data(), l.size()));
    if (!cps.ok()) return Annotate(cps.status(), where);
    for (char32_t c : *cps) {
      if (IsPythonSpace(c)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": word '", l, "' contains whitespace"));
      }
    }
    auto [it, inserted] = seen.emplace(std::string(l), i + 1);
    if (!inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": word '", l, "' repeats line ", it->second));
    }
    words.emplace_back(l);
  }
  if (words.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": has no words"));
  return FromVocabulary(std::move(words), context_length);
}

std::unique_ptr<WordTokenizer> WordTokenizer::FromVocabulary(std::vector<std::string> words,
                                                             int context_length) {
  std::unique_ptr<WordTokenizer> t(new WordTokenizer());
  t->context_length_ = context_length <= 0 ? kWordContextLength : std::max(context_length, 3);
  t->words_ = std::move(words);
  t->ids_.reserve(t->words_.size());
  for (size_t i = 0; i < t->words_.size(); ++i) {
    t->ids_.emplace(t->words_[i], static_cast<int64_t>(kWordSpecialTokens + i));
  }
  return t;
}

std::vector<std::string> WordTokenizer::BuildVocabulary(const std::vector<std::string>& corpus,
                                                        int min_count) {
  std::map<std::string, int64_t> counts;
  for (const std::string& text : corpus) {
    for (std::string& w : SplitWords(text)) ++counts[std::move(w)];
  }
  std::vector<std::string> out;
  for (auto& [word, n] : counts) {
    if (n >= min_count) out.push_back(word);
  }
  return out;  // std::map iterates in byte order
}

int64_t WordTokenizer::WordId(std::string_view word) const {
  auto it = ids_.find(std::string(word));
  return it == ids_.end() ? kWordUnk : it->second;
}

absl::StatusOr<std::vector<int64_t>> WordTokenizer::Encode(std::string_view text) const {
  EQSIM_RETURN_IF_ERROR(ValidateText(text, kNoTextByteLimit));
  std::vector<int64_t> ids(context_length_, kWordPad);
  ids[0] = kWordSos;
  int pos = 1;
  for (const std::string& w : SplitWords(text)) {
    if (pos >= context_length_ - 1) break;
    ids[pos++] = WordId(w);
  }
  ids[pos] = kWordEos;
  return ids;
}

absl::Status WordTokenizer::Save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for writing"));
  for (const std::string& w : words_) out << w << '\n';
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

std::string WordTokenizer::name() const {
  return absl::StrCat("word (", vocab_size(), " ids, context ", context_length_, ")");
}

}  // namespace eqsim
