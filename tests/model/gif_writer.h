// Test-only GIF writer: a real LZW encoder (variable code width, table resets at 4096) and an
// uncompressed mode (literal codes with a clear code every 250), both valid GIF streams.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace eqsim::testing {

class BitWriter {
 public:
  void Put(int code, int width) {
    acc_ |= static_cast<uint64_t>(code) << nbits_;
    nbits_ += width;
    while (nbits_ >= 8) {
      bytes_.push_back(static_cast<char>(acc_ & 0xff));
      acc_ >>= 8;
      nbits_ -= 8;
    }
  }
  std::string Finish() {
    if (nbits_ > 0) bytes_.push_back(static_cast<char>(acc_ & 0xff));
    return bytes_;
  }

 private:
  std::string bytes_;
  uint64_t acc_ = 0;
  int nbits_ = 0;
};

inline std::string LzwEncode(const std::vector<uint8_t>& idx, int m, bool compress = true) {
  const int clear = 1 << m, eoi = clear + 1;
  BitWriter w;
  int width = m + 1, next = clear + 2;
  std::map<std::pair<int, int>, int> dict;
  w.Put(clear, width);
  if (!compress) {
    int since_clear = 0;
    for (uint8_t v : idx) {
      if (since_clear == 250) {
        w.Put(clear, width);
        width = m + 1;
        next = clear + 2;
        since_clear = 0;
      }
      w.Put(v, width);
      if (since_clear++ > 0 && next < 4096) {
        ++next;
        if (next == (1 << width) && width < 12) ++width;
      }
    }
    w.Put(eoi, width);
    return w.Finish();
  }
  int prefix = idx[0];
  auto emit_and_grow = [&](int code, bool add) {
    w.Put(code, width);
    if (add) {
      ++next;
      if (next - 1 == (1 << width) && width < 12) ++width;
    }
  };
  for (size_t i = 1; i < idx.size(); ++i) {
    const int k = idx[i];
    auto it = dict.find({prefix, k});
    if (it != dict.end()) {
      prefix = it->second;
      continue;
    }
    w.Put(prefix, width);
    if (next < 4096) {
      dict[{prefix, k}] = next++;
      if (next - 1 == (1 << width) && width < 12) ++width;
    } else {
      w.Put(clear, width);
      dict.clear();
      width = m + 1;
      next = clear + 2;
    }
    prefix = k;
  }
  emit_and_grow(prefix, next < 4096);
  w.Put(eoi, width);
  return w.Finish();
}

struct GifFrame {
  int left = 0, top = 0, width = 0, height = 0;
  std::vector<uint8_t> indices;  // width * height, in display row order
  std::string local_table;       // RGB triples; empty = use the global table
  bool interlaced = false;
  int transparent = -1;
};

inline void PutLe16(std::string* s, int v) {
  s->push_back(static_cast<char>(v & 0xff));
  s->push_back(static_cast<char>((v >> 8) & 0xff));
}

// `table` must hold 2^k RGB triples (k = 1..8).
inline std::string MakeGif(int screen_w, int screen_h, const std::string& global_table,
                           int background, const GifFrame& f, bool compress = true) {
  auto bits_for = [](const std::string& t) {
    int k = 1;
    while ((3 << k) < static_cast<int>(t.size())) ++k;
    return k;
  };
  std::string g = "GIF89a";
  PutLe16(&g, screen_w);
  PutLe16(&g, screen_h);
  g.push_back(static_cast<char>(global_table.empty() ? 0 : 0x80 | (bits_for(global_table) - 1)));
  g.push_back(static_cast<char>(background));
  g.push_back(0);
  g += global_table;
  g += std::string("\x21\xfe\x05hello\x00", 9);  // a comment extension to skip
  if (f.transparent >= 0) {
    g += std::string("\x21\xf9\x04\x01\x00\x00", 6);
    g.push_back(static_cast<char>(f.transparent));
    g.push_back(0);
  }
  g.push_back(0x2C);
  PutLe16(&g, f.left);
  PutLe16(&g, f.top);
  PutLe16(&g, f.width);
  PutLe16(&g, f.height);
  g.push_back(static_cast<char>((f.local_table.empty() ? 0 : 0x80 | (bits_for(f.local_table) - 1)) |
                                (f.interlaced ? 0x40 : 0)));
  g += f.local_table;
  std::vector<uint8_t> stream = f.indices;
  if (f.interlaced) {  // rows in pass order
    stream.clear();
    for (auto [start, step] : {std::pair<int, int>{0, 8}, {4, 8}, {2, 4}, {1, 2}})
      for (int y = start; y < f.height; y += step)
        stream.insert(stream.end(), f.indices.begin() + y * f.width, f.indices.begin() + (y + 1) * f.width);
  }
  const int m = std::max(2, bits_for(f.local_table.empty() ? global_table : f.local_table));
  g.push_back(static_cast<char>(m));
  const std::string data = LzwEncode(stream, m, compress);
  for (size_t i = 0; i < data.size(); i += 255) {
    const size_t n = std::min<size_t>(255, data.size() - i);
    g.push_back(static_cast<char>(n));
    g.append(data, i, n);
  }
  g.push_back(0);
  g.push_back(0x3B);
  return g;
}

}  // namespace eqsim::testing
