#include "model/image/gif.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace eqsim {
namespace {

absl::Status Malformed(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed GIF: ", std::string(what)));
}
absl::Status Truncated(size_t size, std::string_view where) {
  return absl::InvalidArgumentError(
      absl::StrCat("image is truncated (GIF, ", size, " bytes, ", std::string(where), ")"));
}

uint32_t Le16(std::string_view b, size_t o) {
  return static_cast<unsigned char>(b[o]) | (static_cast<uint32_t>(static_cast<unsigned char>(b[o + 1])) << 8);
}

// Concatenates data sub-blocks starting at *pos (size byte, data..., 0 terminator).
absl::Status ReadSubBlocks(std::string_view b, size_t* pos, std::string* out) {
  while (true) {
    if (*pos >= b.size()) return Truncated(b.size(), "in a data sub-block");
    const size_t n = static_cast<unsigned char>(b[(*pos)++]);
    if (n == 0) return absl::OkStatus();
    if (*pos + n > b.size()) return Truncated(b.size(), "in a data sub-block");
    if (out != nullptr) out->append(b.data() + *pos, n);
    *pos += n;
  }
}

// LZW-decodes `data` into exactly `count` colour indices.
absl::Status LzwDecode(const std::string& data, int min_code_size, size_t count,
                       std::vector<uint8_t>* out) {
  if (min_code_size < 1 || min_code_size > 11) {
    return Malformed(absl::StrCat("LZW minimum code size ", min_code_size));
  }
  constexpr int kMaxCodes = 4096;
  std::vector<uint16_t> prefix(kMaxCodes);
  std::vector<uint8_t> suffix(kMaxCodes), first(kMaxCodes);
  std::vector<uint8_t> stack;
  stack.reserve(kMaxCodes);
  const int clear = 1 << min_code_size, eoi = clear + 1;
  for (int i = 0; i < clear; ++i) {
    suffix[i] = static_cast<uint8_t>(i);
    first[i] = static_cast<uint8_t>(i);
  }
  int width = min_code_size + 1, next = clear + 2, prev = -1;
  uint32_t bits = 0;
  int nbits = 0;
  size_t byte = 0;
  out->clear();
  out->reserve(count);
  while (out->size() < count) {
    while (nbits < width && byte < data.size()) {
      bits |= static_cast<uint32_t>(static_cast<unsigned char>(data[byte++])) << nbits;
      nbits += 8;
    }
    if (nbits < width) break;  // data ran out
    const int code = static_cast<int>(bits & ((1u << width) - 1));
    bits >>= width;
    nbits -= width;
    if (code == clear) {
      width = min_code_size + 1;
      next = clear + 2;
      prev = -1;
      continue;
    }
    if (code == eoi) break;
    if (prev < 0) {
      if (code >= clear) return Malformed(absl::StrCat("LZW stream starts with code ", code));
      out->push_back(static_cast<uint8_t>(code));
      prev = code;
      continue;
    }
    int cur = code;
    stack.clear();
    if (code == next) {  // the KwKwK case: prev's string + its first symbol
      stack.push_back(first[prev]);
      cur = prev;
    } else if (code > next) {
      return Malformed(absl::StrCat("LZW code ", code, " beyond the table (", next, " entries)"));
    }
    while (cur >= clear) {
      stack.push_back(suffix[cur]);
      cur = prefix[cur];
    }
    stack.push_back(static_cast<uint8_t>(cur));
    for (auto it = stack.rbegin(); it != stack.rend() && out->size() < count; ++it) out->push_back(*it);
    if (next < kMaxCodes) {
      prefix[next] = static_cast<uint16_t>(prev);
      suffix[next] = static_cast<uint8_t>(cur);  // first symbol of the current string
      first[next] = first[prev];
      ++next;
      if (next == (1 << width) && width < 12) ++width;
    }
    prev = code;
  }
  if (out->size() < count) {
    return Malformed(absl::StrCat("image data ends after ", out->size(), " of ", count, " pixels"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<cv::Mat> DecodeGifFirstFrame(std::string_view b, int64_t max_pixels) {
  if (b.size() < 13) return Truncated(b.size(), "header needs 13");
  if (b.substr(0, 6) != "GIF87a" && b.substr(0, 6) != "GIF89a") return Malformed("bad signature");
  const int64_t sw = Le16(b, 6), sh = Le16(b, 8);
  if (sw == 0 || sh == 0) return Malformed(absl::StrCat("logical screen is ", sw, "x", sh));
  if (sw * sh > max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat("image is ", sw, "x", sh, " = ", sw * sh,
                                                   " pixels, over the limit of ", max_pixels));
  }
  const unsigned flags = static_cast<unsigned char>(b[10]);
  const int background = static_cast<unsigned char>(b[11]);
  size_t pos = 13;
  std::string global;
  if (flags & 0x80) {
    const size_t n = 3u << ((flags & 7) + 1);
    if (pos + n > b.size()) return Truncated(b.size(), "in the global colour table");
    global.assign(b.data() + pos, n);
    pos += n;
  }
  int transparent = -1;
  while (true) {
    if (pos >= b.size()) return Truncated(b.size(), "before the first image");
    const unsigned char block = static_cast<unsigned char>(b[pos++]);
    if (block == 0x3B) return Malformed("the file has no image");
    if (block == 0x21) {  // extension
      if (pos >= b.size()) return Truncated(b.size(), "in an extension");
      const unsigned char label = static_cast<unsigned char>(b[pos++]);
      if (label == 0xF9) {  // graphic control: the transparent index applies to the next image
        std::string gce;
        const absl::Status s = ReadSubBlocks(b, &pos, &gce);
        if (!s.ok()) return s;
        if (gce.size() >= 4 && (gce[0] & 1)) transparent = static_cast<unsigned char>(gce[3]);
      } else {
        const absl::Status s = ReadSubBlocks(b, &pos, nullptr);
        if (!s.ok()) return s;
      }
      continue;
    }
    if (block != 0x2C) return Malformed(absl::StrCat("unknown block 0x", absl::Hex(block), " at byte ", pos - 1));
    if (pos + 9 > b.size()) return Truncated(b.size(), "in the image descriptor");
    const int64_t left = Le16(b, pos), top = Le16(b, pos + 2), fw = Le16(b, pos + 4),
                  fh = Le16(b, pos + 6);
    const unsigned iflags = static_cast<unsigned char>(b[pos + 8]);
    pos += 9;
    if (fw * fh > max_pixels) {
      return absl::InvalidArgumentError(absl::StrCat("GIF frame is ", fw, "x", fh, " = ", fw * fh,
                                                     " pixels, over the limit of ", max_pixels));
    }
    std::string table = global;
    if (iflags & 0x80) {
      const size_t n = 3u << ((iflags & 7) + 1);
      if (pos + n > b.size()) return Truncated(b.size(), "in the local colour table");
      table.assign(b.data() + pos, n);
      pos += n;
    }
    if (table.empty()) return Malformed("no colour table for the first image");
    if (pos >= b.size()) return Truncated(b.size(), "before the image data");
    const int min_code_size = static_cast<unsigned char>(b[pos++]);
    std::string data;
    const absl::Status s = ReadSubBlocks(b, &pos, &data);
    if (!s.ok()) return s;
    std::vector<uint8_t> idx;
    const absl::Status d = LzwDecode(data, min_code_size, static_cast<size_t>(fw * fh), &idx);
    if (!d.ok()) return d;
    // Rows of an interlaced frame come in 4 passes: every 8th from 0, every 8th from 4,
    // every 4th from 2, every 2nd from 1.
    std::vector<int64_t> row_of(static_cast<size_t>(fh));
    if (iflags & 0x40) {
      int64_t r = 0;
      for (auto [start, step] : {std::pair<int64_t, int64_t>{0, 8}, {4, 8}, {2, 4}, {1, 2}}) {
        for (int64_t y = start; y < fh; y += step) row_of[r++] = y;
      }
    } else {
      for (int64_t y = 0; y < fh; ++y) row_of[y] = y;
    }
    const size_t colours = table.size() / 3;
    cv::Vec4b fill(0, 0, 0, 0);
    if (!global.empty() && static_cast<size_t>(background) < global.size() / 3) {
      fill = cv::Vec4b(global[background * 3 + 2], global[background * 3 + 1], global[background * 3], 255);
    }
    cv::Mat out(static_cast<int>(sh), static_cast<int>(sw), CV_8UC4, cv::Scalar(fill[0], fill[1], fill[2], fill[3]));
    for (int64_t r = 0; r < fh; ++r) {
      const int64_t y = top + row_of[r];
      if (y < 0 || y >= sh) continue;
      for (int64_t x = 0; x < fw; ++x) {
        const int64_t sx = left + x;
        if (sx >= sw) break;
        const uint8_t i = idx[static_cast<size_t>(r * fw + x)];
        cv::Vec4b& px = out.at<cv::Vec4b>(static_cast<int>(y), static_cast<int>(sx));
        if (i == transparent) {
          px = cv::Vec4b(0, 0, 0, 0);
        } else if (i < colours) {
          px = cv::Vec4b(table[i * 3 + 2], table[i * 3 + 1], table[i * 3], 255);
        } else {
          px = cv::Vec4b(0, 0, 0, 255);  // index past the table: black, as browsers do
        }
      }
    }
    return out;
  }
}

}  // namespace eqsim
