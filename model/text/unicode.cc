#include "model/text/unicode.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

namespace eqsim {
namespace {

struct Range {
  char32_t lo, hi;
};

bool InRanges(const Range* r, size_t n, char32_t cp) {
  // Ranges are sorted and disjoint: binary search.
  const Range* end = r + n;
  const Range* it = std::upper_bound(r, end, cp, [](char32_t c, const Range& x) { return c < x.lo; });
  if (it == r) return false;
  --it;
  return cp >= it->lo && cp <= it->hi;
}

struct LowerRun {
  char32_t first, last;
  int stride;
  int delta;
};

#include "model/text/unicode_tables.inc"

constexpr Range kSpaces[] = {
    {0x09, 0x0D}, {0x20, 0x20}, {0x85, 0x85}, {0xA0, 0xA0}, {0x1680, 0x1680},
    {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
};

bool IsCasedLetter(char32_t c) { return IsUnicodeLetter(c); }

char32_t LowerOne(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  const LowerRun* end = kLowerRuns + std::size(kLowerRuns);
  const LowerRun* it = std::upper_bound(kLowerRuns, end, c,
                                        [](char32_t v, const LowerRun& r) { return v < r.first; });
  // Runs are disjoint intervals (the generator only extends a run over consecutive mappings).
  if (it == kLowerRuns) return c;
  --it;
  if (c <= it->last && (c - it->first) % it->stride == 0) {
    return static_cast<char32_t>(static_cast<int64_t>(c) + it->delta);
  }
  return c;
}

}  // namespace

bool IsUnicodeLetter(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return InRanges(kLetterRanges, std::size(kLetterRanges), cp);
}

bool IsUnicodeNumber(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return InRanges(kNumberRanges, std::size(kNumberRanges), cp);
}

bool IsUnicodeSpace(char32_t cp) { return InRanges(kSpaces, std::size(kSpaces), cp); }

bool IsPythonSpace(char32_t cp) { return IsUnicodeSpace(cp) || (cp >= 0x1C && cp <= 0x1F); }

std::u32string PyLower(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c == 0x130) {  // İ -> i + combining dot above, as Python does
      out.push_back('i');
      out.push_back(0x307);
      continue;
    }
    if (c == 0x3A3) {
      // Final sigma: preceded by a cased letter and not followed by one.
      const bool before = i > 0 && IsCasedLetter(s[i - 1]);
      const bool after = i + 1 < s.size() && IsCasedLetter(s[i + 1]);
      out.push_back(before && !after ? 0x3C2 : 0x3C3);
      continue;
    }
    out.push_back(LowerOne(c));
  }
  return out;
}

}  // namespace eqsim
