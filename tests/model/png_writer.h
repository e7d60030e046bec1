// Test-only: writes PNG files by hand (palette, 16-bit, gray+alpha, ...) so that the decoder
// is exercised on encodings cv::imencode never produces.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <string>
#include <vector>

namespace eqsim::testing {

inline void PutBe32(std::string* s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

inline std::string PngChunk(const std::string& type, const std::string& data) {
  std::string out;
  PutBe32(&out, static_cast<uint32_t>(data.size()));
  const std::string body = type + data;
  out += body;
  PutBe32(&out, static_cast<uint32_t>(
                    crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size())));
  return out;
}

inline std::string PngSignature() { return std::string("\x89PNG\r\n\x1a\n", 8); }

inline std::string PngIhdr(uint32_t w, uint32_t h, int bit_depth, int color_type) {
  std::string d;
  PutBe32(&d, w);
  PutBe32(&d, h);
  d.push_back(static_cast<char>(bit_depth));
  d.push_back(static_cast<char>(color_type));
  d.push_back(0);
  d.push_back(0);
  d.push_back(0);
  return PngChunk("IHDR", d);
}

// rows: raw scanline bytes, without filter bytes (filter 0 is added).
inline std::string MakePng(uint32_t w, uint32_t h, int bit_depth, int color_type,
                           const std::vector<std::string>& rows, const std::string& plte = "",
                           const std::string& trns = "") {
  std::string raw;
  for (const std::string& r : rows) {
    raw.push_back(0);
    raw += r;
  }
  uLongf cap = compressBound(raw.size());
  std::string z(cap, '\0');
  compress2(reinterpret_cast<Bytef*>(z.data()), &cap, reinterpret_cast<const Bytef*>(raw.data()),
            raw.size(), 6);
  z.resize(cap);
  std::string png = PngSignature() + PngIhdr(w, h, bit_depth, color_type);
  if (!plte.empty()) png += PngChunk("PLTE", plte);
  if (!trns.empty()) png += PngChunk("tRNS", trns);
  png += PngChunk("IDAT", z);
  png += PngChunk("IEND", "");
  return png;
}

}  // namespace eqsim::testing
