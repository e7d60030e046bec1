// CLIP BPE tokenizer: every golden id list, text cleaning against Python's own html.unescape /
// str.lower / unicodedata, pre-tokenisation, errors and concurrency.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/text/clip_bpe.h"
#include "model/text/tokenizer.h"
#include "model/text/unicode.h"
#include "nlohmann/json.hpp"
#include "tests/model/test_util.h"

namespace eqsim {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kClipDir = std::string(EQSIM_SHARED_DIR) + "/data/clip";

using ::eqsim::testing::ProcessTempDir;


struct Golden {
  std::string text;
  std::vector<int64_t> ids;
  bool truncated;
};

std::vector<Golden> LoadGolden() {
  std::vector<Golden> out;
  std::ifstream in(kClipDir + "/tokenizer_golden.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    out.push_back({j["text"].get<std::string>(), j["ids"].get<std::vector<int64_t>>(),
                   j["truncated"].get<bool>()});
  }
  return out;
}

const ClipBpeTokenizer& Tok() {
  static const ClipBpeTokenizer* tok = [] {
    auto t = ClipBpeTokenizer::Load(kClipDir + "/bpe_simple_vocab_16e6.txt.gz");
    EXPECT_TRUE(t.ok()) << t.status();
    return t->release();
  }();
  return *tok;
}

std::string RunPython(const std::string& code) {
  const std::string path = ProcessTempDir() + "/clip_test.py";
  std::ofstream(path) << code;
  std::string out;
  FILE* p = ::popen(("/usr/bin/python3 " + path).c_str(), "r");
  if (p == nullptr) return out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  EXPECT_EQ(::pclose(p), 0);
  return out;
}

std::u32string U32(std::string_view utf8) {
  auto cps = DecodeUtf8(utf8);
  return cps.ok() ? std::u32string(cps->begin(), cps->end()) : U"";
}
std::string Utf8(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) AppendUtf8(c, &out);
  return out;
}

TEST(ClipBpe, MatchesEveryGoldenIdList) {
  const std::vector<Golden> golden = LoadGolden();
  ASSERT_EQ(golden.size(), 25u);
  int truncated = 0;
  for (const Golden& g : golden) {
    SCOPED_TRACE(g.text);
    auto ids = Tok().EncodeAllowEmpty(g.text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, g.ids);
    truncated += g.truncated;
    // Encode() is the same, except that it refuses whitespace-only text.
    auto checked = Tok().Encode(g.text);
    if (ValidateText(g.text).ok()) {
      ASSERT_TRUE(checked.ok()) << checked.status();
      EXPECT_EQ(*checked, g.ids);
    } else {
      EXPECT_EQ(checked.status().message(), "text is only whitespace");
    }
  }
  EXPECT_EQ(Tok().vocab_size(), 49408);
  EXPECT_EQ(Tok().context_length(), 77);
  EXPECT_EQ(Tok().name(), "clip-bpe (49408 ids, context 77)");
}

TEST(ClipBpe, TruncationKeepsEotLast) {
  std::string text;
  for (int i = 0; i < 60; ++i) text += "red bag and ";
  auto raw = Tok().EncodeRaw(text);
  ASSERT_TRUE(raw.ok());
  ASSERT_GT(raw->size(), 100u);
  auto ids = Tok().Encode(text);
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 77u);
  EXPECT_EQ(ids->front(), kClipSot);
  EXPECT_EQ(ids->back(), kClipEot);
  EXPECT_TRUE(std::equal(raw->begin(), raw->begin() + 75, ids->begin() + 1));
  // Very long input (beyond ValidateText's default byte limit) still encodes: Encode leaves
  // byte limits to the caller and stops running BPE once 75 ids are known.
  std::string huge;
  while (huge.size() < 300 * 1024) huge += "a photo of a cat ";
  auto huge_ids = Tok().Encode(huge);
  ASSERT_TRUE(huge_ids.ok()) << huge_ids.status();
  EXPECT_EQ(huge_ids->back(), kClipEot);
  EXPECT_EQ((*huge_ids)[1], 320);
  // A smaller context works the same way.
  auto small = ClipBpeTokenizer::Load(kClipDir + "/bpe_simple_vocab_16e6.txt.gz", 5);
  ASSERT_TRUE(small.ok());
  EXPECT_THAT(*(*small)->Encode("a photo of a cat"), ElementsAre(49406, 320, 1125, 539, 49407));
}

TEST(ClipBpe, DecodeInvertsEncode) {
  for (const char* text : {"a photo of a cat", "two sneakers to the left of a handbag",
                           "café crème 日本語 🐶"}) {
    auto ids = Tok().Encode(text);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(Tok().Decode(*ids), std::string(text) + " ");
  }
  // "!" has id 0 (also the padding id) and survives inside text. As in CLIP, every
  // pre-token ends a word, so "bag!" decodes as "bag ! ".
  EXPECT_EQ(Tok().Decode(*Tok().Encode("wow ! ok")), "wow ! ok ");
  EXPECT_EQ(Tok().Decode(*Tok().Encode("a bag!")), "a bag ! ");
}

TEST(ClipBpe, SpecialTokensInsideText) {
  auto ids = Tok().EncodeRaw("a <|endoftext|> b <|startoftext|>");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(320, kClipEot, 321, kClipSot));
}

TEST(ClipBpe, PreTokenizationFollowsClipRegex) {
  EXPECT_THAT(ClipPreTokenize("it's they're we'll i'd"),
              ElementsAre("it", "'s", "they", "'re", "we", "'ll", "i", "'d"));
  EXPECT_THAT(ClipPreTokenize("''s x'y"), ElementsAre("''", "s", "x", "'", "y"));
  EXPECT_THAT(ClipPreTokenize("a1b 2026"), ElementsAre("a", "1", "b", "2", "0", "2", "6"));
  EXPECT_THAT(ClipPreTokenize("hello!!! #@$ wörld"), ElementsAre("hello", "!!!", "#@$", "wörld"));
  EXPECT_THAT(ClipPreTokenize("日本語のテキスト"), ElementsAre("日本語のテキスト"));
  EXPECT_THAT(ClipPreTokenize("🐶🐱x"), ElementsAre("🐶🐱", "x"));
  EXPECT_THAT(ClipPreTokenize("x<|endoftext|>y"), ElementsAre("x", "<|endoftext|>", "y"));
  EXPECT_THAT(ClipPreTokenize("½²"), ElementsAre("½", "²"));  // \p{N}: one at a time
}

TEST(ClipBpe, CleaningSteps) {
  EXPECT_EQ(*ClipCleanText("  Multiple \t\n SPACES\u00a0here  "), "multiple spaces here");
  EXPECT_EQ(*ClipCleanText("&amp;amp; &lt;b&gt;"), "& <b>");  // unescaped twice
  EXPECT_EQ(*ClipCleanText("ΟΔΟΣ ΣΑ Ёж"), "οδος σα ёж");    // final sigma, Cyrillic
  // ftfy-lite: curly quotes, ligatures, fullwidth forms, control characters.
  EXPECT_EQ(*Tok().Encode("don\u2019t"), *Tok().Encode("don't"));
  EXPECT_EQ(*Tok().Encode("\ufb01sh \u201cquoted\u201d"), *Tok().Encode("fish \"quoted\""));
  EXPECT_EQ(*Tok().Encode("\uff21\uff22\uff23\u3000x"), *Tok().Encode("abc x"));
  // Halfwidth katakana with a halfwidth voiced mark: width fix, then NFC composes ガ.
  EXPECT_EQ(*ClipCleanText("\uff76\uff9e\uff97\uff7d"), "\u30ac\u30e9\u30b9");
  EXPECT_EQ(*Tok().Encode(std::string("a\x01\x7f" "b", 4)), *Tok().Encode("ab"));
}

TEST(ClipBpe, HtmlUnescapeMatchesPython) {
  const std::vector<std::string> cases = {
      "&amp;lt;", "&ampfoo", "&notit;", "&#39;&#x27;&#X41;", "&#128;&#150;", "&#0;x", "&#xD800;",
      "&#1114112;", "&#99999999999999999999;", "&bogus; & &; &#; &#x;", "&eacute&eacute;&Eacute",
      "&alpha;&Omega;&hellip;&mdash;&euro;", "&AMP &COPY; &quot", "a&b&c", "&#65&#66;",
      "&lt&gt", "&#13;&#x80;&#x9f;", "&#1;&#11;&#xfffe;", "&apos &apos;", "&nbsp;&shy;&times;"};
  nlohmann::json in = cases;
  // Plus 500 random HTML5 entity names (with and without ';', glued to other text).
  const std::string out = RunPython(
      "import html, html.entities, json, random\nrandom.seed(3)\ncases = json.loads(" +
      nlohmann::json(in.dump()).dump() +
      ")\nnames = sorted(html.entities.html5)\n"
      "cases += ['x&' + random.choice(names) + random.choice(['', ';', 'abc', ' y']) "
      "for _ in range(500)]\n"
      "print(json.dumps([[c, html.unescape(c)] for c in cases]))\n");
  auto expected = nlohmann::json::parse(out);
  ASSERT_EQ(expected.size(), cases.size() + 500);
  int bad = 0;
  for (const auto& c : expected) {
    const std::string input = c[0].get<std::string>();
    if (Utf8(HtmlUnescape(U32(input))) != c[1].get<std::string>() && ++bad <= 10) {
      ADD_FAILURE() << input << " -> " << Utf8(HtmlUnescape(U32(input))) << ", python "
                    << c[1].get<std::string>();
    }
  }
  EXPECT_EQ(bad, 0);
}

// The classifier (tables generated from unicodedata) and lower-casing against Python itself,
// code point by code point over the BMP and the SMP.
TEST(Unicode, AgreesWithPythonCodePointByCodePoint) {
  const std::string out = RunPython(R"(
import unicodedata, sys
ranges = [(0x0, 0xD7FF), (0xE000, 0x1FFFF), (0x20000, 0x200FF), (0xE0000, 0xE01EF)]
lines = []
for lo, hi in ranges:
    for cp in range(lo, hi + 1):
        c = chr(cp)
        cat = unicodedata.category(c)
        kind = 'L' if cat[0] == 'L' else 'N' if cat[0] == 'N' else 'S' if c.isspace() else '-'
        low = c.lower()
        lines.append('%x %s %s' % (cp, kind, ','.join('%x' % ord(x) for x in low)))
print('\n'.join(lines))
)");
  std::istringstream in(out);
  std::string line;
  int checked = 0, class_bad = 0, lower_bad = 0;
  std::vector<std::string> examples;
  while (std::getline(in, line)) {
    unsigned cp;
    char kind;
    char lows[64];
    if (std::sscanf(line.c_str(), "%x %c %63s", &cp, &kind, lows) != 3) continue;
    ++checked;
    const char ours = IsUnicodeLetter(cp) ? 'L' : IsUnicodeNumber(cp) ? 'N' : IsPythonSpace(cp) ? 'S' : '-';
    if (ours != kind) {
      ++class_bad;
      if (examples.size() < 15) examples.push_back(absl::StrFormat("U+%04X class %c vs python %c", cp, ours, kind));
    }
    std::string our_low;
    for (char32_t c : PyLower(std::u32string(1, cp))) {
      absl::StrAppendFormat(&our_low, "%s%x", our_low.empty() ? "" : ",", static_cast<uint32_t>(c));
    }
    if (our_low != lows) {
      ++lower_bad;
      if (examples.size() < 15) examples.push_back(absl::StrFormat("U+%04X lower %s vs python %s", cp, our_low, lows));
    }
  }
  EXPECT_GT(checked, 120000);
  EXPECT_EQ(class_bad, 0) << ::testing::PrintToString(examples);
  EXPECT_EQ(lower_bad, 0) << ::testing::PrintToString(examples);
}

// NFC against unicodedata.normalize on random mixes of bases, precomposed letters, Hangul
// jamo / syllables, singletons and combining marks of several classes.
TEST(Unicode, NfcAgreesWithPython) {
  const std::string out = RunPython(R"(
import json, random, unicodedata
random.seed(7)
pool = ([chr(c) for c in range(0x61, 0x7B)] + list('AEIOUaeiouyYnNcCsSzZ') +
        [chr(c) for c in range(0xC0, 0x180)] + [chr(c) for c in range(0x300, 0x370)] +
        ['\u0323', '\u0331', '\u0345', '\u05B0', '\u05BC', '\u0651', '\u093C', '\u0B3E',
         '\u0B47', '\u3099', '\u309A', '\u304B', '\u30CF', '\u212B', '\u2126', '\uF900',
         '\u0344', '\u0340', '\u1E9B', '\u03B1', '\u03C9', '\u1F00', '\u0418', '\u0439',
         '\u1100', '\u1161', '\u11A8', '\uAC00', '\uAC01', '\uD7A3', '\u0041\u030A',
         '\u1E63', '\u1EA0', '\u00E2', '\u0DD9', '\u0DCF', '\u0DCA', '\U0001D15E'])
cases = []
for i in range(3000):
    s = ''.join(random.choice(pool) for _ in range(random.randint(1, 7)))
    cases.append([s, unicodedata.normalize('NFC', s)])
print(json.dumps(cases))
)");
  auto cases = nlohmann::json::parse(out);
  ASSERT_EQ(cases.size(), 3000u);
  int bad = 0;
  for (const auto& c : cases) {
    const std::string in = c[0].get<std::string>(), expected = c[1].get<std::string>();
    const std::string got = Utf8(Nfc(U32(in)));
    if (got != expected && ++bad <= 5) ADD_FAILURE() << "NFC of '" << in << "': got '" << got << "', python '" << expected << "'";
  }
  EXPECT_EQ(bad, 0);
  // Through the tokenizer: decomposed accents tokenize like the precomposed golden text.
  EXPECT_EQ(*Tok().Encode("cafe\u0301 cre\u0300me bru\u0302le\u0301e"), *Tok().Encode("café crème brûlée"));
}

// Python's final-sigma rule in context: capital sigma between random letters, marks,
// apostrophes, digits, CJK, spaces and other sigmas.
TEST(Unicode, FinalSigmaAgreesWithPython) {
  const std::string out = RunPython(R"(
import json, random
random.seed(11)
pool = ['\u03a3', '\u03a3', 'A', 'a', '\u0391', '\u03b1', '\u0301', '\u0345', "'", '.', ':',
        '\u00b7', '\u02b0', '\u00aa', '1', ' ', '\u65e5', '\u0410', '-', '\u00ad', '\u200d']
cases = [''.join(random.choice(pool) for _ in range(random.randint(1, 6))) for _ in range(3000)]
print(json.dumps([[c, c.lower()] for c in cases]))
)");
  auto cases = nlohmann::json::parse(out);
  int bad = 0;
  for (const auto& c : cases) {
    const std::string got = Utf8(PyLower(U32(c[0].get<std::string>())));
    if (got != c[1].get<std::string>() && ++bad <= 5) {
      ADD_FAILURE() << "lower('" << c[0].get<std::string>() << "') = '" << got << "', python '"
                    << c[1].get<std::string>() << "'";
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(ValidateText, PreciseErrors) {
  EXPECT_TRUE(ValidateText("ok").ok());
  EXPECT_EQ(ValidateText("").message(), "text is empty");
  EXPECT_EQ(ValidateText(" \t\n\u3000").message(), "text is only whitespace");
  EXPECT_EQ(ValidateText("abc\xff").message(), "text is not valid UTF-8 (invalid byte 0xff at offset 3)");
  EXPECT_EQ(ValidateText("a\xc3(").message(), "text is not valid UTF-8 (invalid byte 0x28 at offset 2)");
  EXPECT_EQ(ValidateText("ab\xe6\x97").message(), "text is not valid UTF-8 (truncated 3-byte sequence at offset 2)");
  EXPECT_EQ(ValidateText("\xc0\xaf").message(), "text is not valid UTF-8 (invalid byte 0xc0 at offset 0)");
  EXPECT_EQ(ValidateText("\xe0\x80\xaf").message(), "text is not valid UTF-8 (overlong encoding at offset 0)");
  EXPECT_EQ(ValidateText("x\xed\xa0\x80").message(), "text is not valid UTF-8 (surrogate U+D800 at offset 1)");
  EXPECT_EQ(ValidateText("\xf4\x90\x80\x80").message(), "text is not valid UTF-8 (code point above U+10FFFF at offset 0)");
  EXPECT_EQ(ValidateText(std::string(70000, 'a')).message(), "text is 70000 bytes, over the limit of 65536");
  EXPECT_EQ(ValidateText("abcdef", 5).message(), "text is 6 bytes, over the limit of 5");
}

TEST(ClipBpe, BatchErrorsNameTheItem) {
  auto batch = Tok().EncodeBatch({"a cat", "a dog"});
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->n, 2);
  EXPECT_EQ(batch->length, 77);
  ASSERT_EQ(batch->ids.size(), 154u);
  EXPECT_EQ(batch->ids[77 + 2], 1929);  // "dog"
  EXPECT_EQ(Tok().EncodeBatch({"a", "b", "c", "\xff"}).status().message(),
            "text 3: text is not valid UTF-8 (invalid byte 0xff at offset 0)");
  EXPECT_EQ(Tok().EncodeBatch({"a", ""}).status().message(), "text 1: text is empty");
  auto empty = Tok().EncodeBatch({});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->n, 0);
}

TEST(CreateTokenizer, ResolvesVocabInSearchDirs) {
  config::TokenizerConfig cfg;
  cfg.set_kind(config::TokenizerConfig::CLIP_BPE);
  cfg.set_vocab_file("bpe_simple_vocab_16e6.txt.gz");
  auto tok = CreateTokenizer(cfg, {"/nonexistent", kClipDir});
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 49408);
  EXPECT_EQ(*(*tok)->Encode("a photo of a cat"), LoadGolden()[0].ids);
  auto missing = CreateTokenizer(cfg, {"/nonexistent", "/tmp"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(),
            "tokenizer.vocab_file 'bpe_simple_vocab_16e6.txt.gz' not found; tried: "
            "/nonexistent/bpe_simple_vocab_16e6.txt.gz, /tmp/bpe_simple_vocab_16e6.txt.gz");
  cfg.set_context_length(1);
  EXPECT_THAT(std::string(CreateTokenizer(cfg, {kClipDir}).status().message()),
              HasSubstr("tokenizer.context_length must be 0 (default) or in [2, 4096], got 1"));
  config::TokenizerConfig no_kind;
  no_kind.set_vocab_file("x");
  EXPECT_EQ(CreateTokenizer(no_kind, {kClipDir}).status().message(),
            "tokenizer.kind must be CLIP_BPE or WORD, got KIND_UNSPECIFIED");
  config::TokenizerConfig no_file;
  no_file.set_kind(config::TokenizerConfig::CLIP_BPE);
  EXPECT_THAT(std::string(CreateTokenizer(no_file, {kClipDir}).status().message()),
              HasSubstr("tokenizer.vocab_file is required for CLIP_BPE"));
}

TEST(ClipBpe, BadMergesFiles) {
  const std::string dir = ProcessTempDir();
  std::ofstream(dir + "/short_merges.txt") << "#version: 0.2\ni n\nt h\n";
  EXPECT_THAT(std::string(ClipBpeTokenizer::Load(dir + "/short_merges.txt").status().message()),
              HasSubstr("short_merges.txt: has 4 lines, a CLIP merges file needs at least 48895"));
  {
    std::ofstream bad(dir + "/bad_merges.txt");
    bad << "#version: 0.2\n";
    for (int i = 0; i < 50000; ++i) bad << (i == 10 ? "abc\n" : "a b\n");
  }
  EXPECT_THAT(std::string(ClipBpeTokenizer::Load(dir + "/bad_merges.txt").status().message()),
              HasSubstr("bad_merges.txt: line 12: expected two symbols, got 'abc'"));
  EXPECT_EQ(ClipBpeTokenizer::Load(dir + "/none.txt.gz").status().code(), absl::StatusCode::kNotFound);
}

// Random text from many scripts: ids stay in range and BPE is lossless (decoding gives back
// every pre-token of the cleaned text); random bytes give an error or ids, never a crash.
TEST(ClipBpe, RandomTextRoundTripsAndRandomBytesAreSafe) {
  std::mt19937 rng(99);
  const std::vector<std::pair<char32_t, char32_t>> blocks = {
      {0x20, 0x7E}, {0xA0, 0x17F}, {0x370, 0x3FF}, {0x400, 0x4FF}, {0x590, 0x6FF}, {0x900, 0x97F},
      {0x2000, 0x206F}, {0x3040, 0x30FF}, {0x4E00, 0x4FFF}, {0xAC00, 0xAFFF}, {0x1F300, 0x1F6FF}};
  int checked = 0;
  for (int t = 0; t < 2000; ++t) {
    std::string text;
    const int n = 1 + static_cast<int>(rng() % 10);
    for (int i = 0; i < n; ++i) {
      const auto& [lo, hi] = blocks[rng() % blocks.size()];
      AppendUtf8(lo + rng() % (hi - lo + 1), &text);
    }
    auto ids = Tok().EncodeAllowEmpty(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    for (int64_t id : *ids) ASSERT_TRUE(id >= 0 && id < kClipVocabSize);
    auto cleaned = ClipCleanText(text);
    ASSERT_TRUE(cleaned.ok());
    std::string expected;
    for (const std::string& piece : ClipPreTokenize(*cleaned)) expected += piece + " ";
    if (ids->back() == 0) {  // not truncated
      EXPECT_EQ(Tok().Decode(*ids), expected) << text;
      ++checked;
    }
  }
  EXPECT_GT(checked, 1900);
  for (int t = 0; t < 2000; ++t) {
    std::string bytes(1 + rng() % 40, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() & 0xff);
    auto ids = Tok().Encode(bytes);
    if (ids.ok()) {
      EXPECT_EQ(ids->size(), 77u);
    } else {
      EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(ClipBpe, ConcurrentEncodingIsConsistent) {
  const std::vector<Golden> golden = LoadGolden();
  auto fresh = ClipBpeTokenizer::Load(kClipDir + "/bpe_simple_vocab_16e6.txt.gz");
  ASSERT_TRUE(fresh.ok());
  const ClipBpeTokenizer& tok = **fresh;
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round)
        for (size_t i = 0; i < golden.size(); ++i) {
          const Golden& g = golden[(i + t * 7) % golden.size()];
          auto ids = tok.EncodeAllowEmpty(g.text);
          if (!ids.ok() || *ids != g.ids) ++mismatches[t];
        }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
  EXPECT_GT(tok.cache_size(), 50u);
}

}  // namespace
}  // namespace eqsim
