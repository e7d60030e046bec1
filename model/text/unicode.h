// Small, table-driven Unicode helpers for the tokenizers (no ICU on purpose: the dependency
// set is fixed). Coverage, not completeness: see each function.
#pragma once

#include <string>
#include <string_view>

namespace eqsim {

// \p{L} (categories Lu Ll Lt Lm Lo) and \p{N} (Nd Nl No) over all of Unicode, from tables
// generated from Python's unicodedata (model/text/gen_unicode_tables.py; Unicode 14.0). The
// `regex` module CLIP uses may follow a newer Unicode version: code points assigned since
// then are classified as neither.
bool IsUnicodeLetter(char32_t cp);
bool IsUnicodeNumber(char32_t cp);
// \s of the `regex` module: the Unicode White_Space property.
bool IsUnicodeSpace(char32_t cp);
// Python's str.isspace(): White_Space plus U+001C..U+001F.
bool IsPythonSpace(char32_t cp);

// Python's str.lower(): every single-code-point lower-case mapping of Unicode 14 (generated
// table), U+0130 -> "i\u0307", and Python's final-sigma rule (Σ -> ς after a cased letter,
// skipping case-ignorable code points, and not before one; tables read off Python itself).
std::u32string PyLower(const std::u32string& s);

// ftfy's fix_character_width for one code point: U+3000 -> ' ', U+FF01..U+FFEF (fullwidth
// ASCII, halfwidth katakana / hangul, fullwidth symbols) -> their NFKC form; else c itself.
void AppendWidthFixed(char32_t c, std::u32string* out);

// Unicode Normalization Form C (canonical decomposition, canonical ordering, canonical
// composition incl. Hangul), as unicodedata.normalize("NFC", s) with Unicode 14 tables.
std::u32string Nfc(const std::u32string& s);

}  // namespace eqsim
