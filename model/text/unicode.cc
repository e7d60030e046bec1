#include "model/text/unicode.h"

#include <algorithm>
#include <cstdint>
#include <utility>
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

struct Decomposition {
  char32_t cp;
  char32_t to[4];  // zero padded
};

struct CombiningRange {
  char32_t lo, hi;
  int ccc;
};

struct Composition {
  char32_t first, second, composed;
};

struct WidthMapping {
  char32_t cp, to1, to2;  // to2 = 0 for one code point
};

#include "model/text/unicode_tables.inc"

// Hangul syllable arithmetic (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
              kSCount = kLCount * kNCount;

int CombiningClass(char32_t c) {
  if (c < 0x300) return 0;
  const CombiningRange* end = kCombiningClasses + std::size(kCombiningClasses);
  const CombiningRange* it = std::upper_bound(
      kCombiningClasses, end, c, [](char32_t v, const CombiningRange& r) { return v < r.lo; });
  if (it == kCombiningClasses) return 0;
  --it;
  return c <= it->hi ? it->ccc : 0;
}

void Decompose(char32_t c, std::u32string* out) {
  if (c >= kSBase && c < kSBase + kSCount) {
    const int s = static_cast<int>(c - kSBase);
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* end = kDecompositions + std::size(kDecompositions);
  const Decomposition* it = std::lower_bound(
      kDecompositions, end, c, [](const Decomposition& d, char32_t v) { return d.cp < v; });
  if (it == end || it->cp != c) {
    out->push_back(c);
    return;
  }
  for (char32_t t : it->to) {
    if (t != 0) out->push_back(t);
  }
}

// The primary composite of (a, b), or 0.
char32_t Compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const Composition* end = kCompositions + std::size(kCompositions);
  const Composition* it = std::lower_bound(kCompositions, end, std::make_pair(a, b),
                                           [](const Composition& c, std::pair<char32_t, char32_t> v) {
                                             return c.first != v.first ? c.first < v.first
                                                                       : c.second < v.second;
                                           });
  return it != end && it->first == a && it->second == b ? it->composed : 0;
}

constexpr Range kSpaces[] = {
    {0x09, 0x0D}, {0x20, 0x20}, {0x85, 0x85}, {0xA0, 0xA0}, {0x1680, 0x1680},
    {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
};

// Python's Final_Sigma test: Case_Ignorable code points are skipped; of the others, the
// Cased ones count (kCasedRanges holds Cased and not Case_Ignorable).
bool IsCaseIgnorable(char32_t c) {
  return InRanges(kCaseIgnorableRanges, std::size(kCaseIgnorableRanges), c);
}
bool IsCasedNotIgnorable(char32_t c) { return InRanges(kCasedRanges, std::size(kCasedRanges), c); }

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

void AppendWidthFixed(char32_t c, std::u32string* out) {
  if (c == 0x3000) {
    out->push_back(' ');
    return;
  }
  if (c >= 0xFF01 && c <= 0xFFEF) {
    const WidthMapping* end = kWidthMap + std::size(kWidthMap);
    const WidthMapping* it = std::lower_bound(
        kWidthMap, end, c, [](const WidthMapping& m, char32_t v) { return m.cp < v; });
    if (it != end && it->cp == c) {
      out->push_back(it->to1);
      if (it->to2 != 0) out->push_back(it->to2);
      return;
    }
  }
  out->push_back(c);
}

std::u32string Nfc(const std::u32string& s) {
  // Quick check: nothing below U+0300 changes under NFC or composes with what precedes it.
  if (std::all_of(s.begin(), s.end(), [](char32_t c) { return c < 0x300; })) return s;
  std::u32string d;
  d.reserve(s.size() + 8);
  for (char32_t c : s) Decompose(c, &d);
  // Canonical ordering: stable sort of every run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (CombiningClass(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && CombiningClass(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j,
                     [](char32_t a, char32_t b) { return CombiningClass(a) < CombiningClass(b); });
    i = j;
  }
  // Canonical composition.
  std::u32string out;
  out.reserve(d.size());
  long starter = -1;  // index in `out` of the last starter
  int last_ccc = 0;   // class of the last character appended to `out`
  for (char32_t c : d) {
    const int ccc = CombiningClass(c);
    if (starter >= 0) {
      const bool adjacent = static_cast<long>(out.size()) - 1 == starter;
      const bool blocked = !adjacent && (last_ccc == 0 || last_ccc >= ccc);
      if (!blocked) {
        if (char32_t composed = Compose(out[starter], c); composed != 0) {
          out[starter] = composed;
          continue;
        }
      }
    }
    if (ccc == 0) starter = static_cast<long>(out.size());
    out.push_back(c);
    last_ccc = ccc;
  }
  return out;
}

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
      // Final sigma: \p{Cased} \p{Case_Ignorable}* Σ, not followed by
      // \p{Case_Ignorable}* \p{Cased} (Python's handle_capital_sigma).
      long j = static_cast<long>(i) - 1;
      while (j >= 0 && IsCaseIgnorable(s[j])) --j;
      bool final_sigma = j >= 0 && IsCasedNotIgnorable(s[j]);
      if (final_sigma) {
        size_t k = i + 1;
        while (k < s.size() && IsCaseIgnorable(s[k])) ++k;
        final_sigma = k == s.size() || !IsCasedNotIgnorable(s[k]);
      }
      out.push_back(final_sigma ? 0x3C2 : 0x3C3);
      continue;
    }
    out.push_back(LowerOne(c));
  }
  return out;
}

}  // namespace eqsim
