#include "model/image/npy.h"

#include <cctype>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "model/core/status_macros.h"

namespace eqsim {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

std::string HexPrefix(std::string_view bytes, size_t n = 8) {
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < n; ++i) {
    if (i) out += ' ';
    absl::StrAppendFormat(&out, "%02x", static_cast<unsigned char>(bytes[i]));
  }
  return out;
}

bool HostIsLittleEndian() {
  const uint16_t x = 1;
  unsigned char c;
  std::memcpy(&c, &x, 1);
  return c == 1;
}

// A tiny parser for the Python dict literal of a .npy header.
class HeaderParser {
 public:
  explicit HeaderParser(std::string_view s) : s_(s) {}

  absl::Status Parse(NpyArray* out) {
    bool have_descr = false, have_order = false, have_shape = false;
    SkipSpace();
    if (!Consume('{')) return Error("expected '{'");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      std::string key;
      EQSIM_RETURN_IF_ERROR(ParseString(&key));
      SkipSpace();
      if (!Consume(':')) return Error(absl::StrCat("expected ':' after key '", key, "'"));
      SkipSpace();
      if (key == "descr") {
        if (Peek() == '[') return Error("structured dtypes (a list 'descr') are not supported");
        EQSIM_RETURN_IF_ERROR(ParseString(&out->dtype));
        have_descr = true;
      } else if (key == "fortran_order") {
        if (ConsumeWord("True")) {
          out->fortran_order = true;
        } else if (ConsumeWord("False")) {
          out->fortran_order = false;
        } else {
          return Error("fortran_order must be True or False");
        }
        have_order = true;
      } else if (key == "shape") {
        EQSIM_RETURN_IF_ERROR(ParseShape(&out->shape));
        have_shape = true;
      } else {
        return Error(absl::StrCat("unexpected key '", key, "'"));
      }
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume('}')) break;
      return Error("expected ',' or '}'");
    }
    if (!have_descr) return Error("missing key 'descr'");
    if (!have_order) return Error("missing key 'fortran_order'");
    if (!have_shape) return Error("missing key 'shape'");
    return absl::OkStatus();
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("header is not a valid dict: ", std::string(what), " at offset ", pos_));
  }
  char Peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool Consume(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  bool ConsumeWord(std::string_view w) {
    if (s_.substr(pos_, w.size()) != w) return false;
    pos_ += w.size();
    return true;
  }
  void SkipSpace() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  absl::Status ParseString(std::string* out) {
    const char q = Peek();
    if (q != '\'' && q != '"') return Error("expected a quoted string");
    ++pos_;
    out->clear();
    while (pos_ < s_.size() && s_[pos_] != q) out->push_back(s_[pos_++]);
    if (!Consume(q)) return Error("unterminated string");
    return absl::OkStatus();
  }
  absl::Status ParseShape(std::vector<int64_t>* shape) {
    shape->clear();
    if (!Consume('(')) return Error("shape must be a tuple");
    while (true) {
      SkipSpace();
      if (Consume(')')) break;
      if (!std::isdigit(static_cast<unsigned char>(Peek()))) {
        return Error("shape entries must be non-negative integers");
      }
      int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(Peek()))) {
        if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) {
          return Error("shape entry too large");
        }
        v = v * 10 + (s_[pos_++] - '0');
      }
      Consume('L');  // Python 2 longs
      shape->push_back(v);
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (Consume(')')) break;
      return Error("expected ',' or ')' in shape");
    }
    return absl::OkStatus();
  }

  std::string_view s_;
  size_t pos_ = 0;
};

// Bytes per element for "<f4"-style descrs, or an error.
absl::StatusOr<int> ItemSizeOf(const std::string& dtype) {
  if (dtype.size() < 3) return absl::InvalidArgumentError(absl::StrCat("unsupported dtype '", dtype, "'"));
  const char order = dtype[0];
  const char kind = dtype[1];
  if (std::strchr("<>|=", order) == nullptr || std::strchr("biufc", kind) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported dtype '", dtype, "'"));
  }
  int size = 0;
  for (size_t i = 2; i < dtype.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(dtype[i])) || size > 1000) {
      return absl::InvalidArgumentError(absl::StrCat("unsupported dtype '", dtype, "'"));
    }
    size = size * 10 + (dtype[i] - '0');
  }
  if (size != 1 && size != 2 && size != 4 && size != 8 && size != 16) {
    return absl::InvalidArgumentError(absl::StrCat("unsupported dtype '", dtype, "'"));
  }
  return size;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

// Product of shape, or -1 on overflow.
int64_t SafeProduct(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return -1;
    n *= d;
  }
  return n;
}

absl::Status Prefixed(std::string_view name, const absl::Status& s) { return Annotate(s, name); }

}  // namespace

int64_t NpyArray::num_elements() const { return SafeProduct(shape); }

int NpyArray::item_size() const {
  auto s = ItemSizeOf(dtype);
  return s.ok() ? *s : 0;
}

absl::StatusOr<NpyArray> ReadNpy(std::string_view bytes, std::string_view name) {
  if (bytes.size() < kMagicLen || bytes.substr(0, kMagicLen) != std::string_view(kMagic, kMagicLen)) {
    return Prefixed(name, absl::InvalidArgumentError(absl::StrCat(
                              "not a .npy file: bad magic (first bytes: ", HexPrefix(bytes),
                              "; expected 93 4e 55 4d 50 59)")));
  }
  if (bytes.size() < 10) {
    return Prefixed(name, absl::InvalidArgumentError(
                              absl::StrCat(".npy is truncated: ", bytes.size(),
                                           " bytes, the preamble needs at least 10")));
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  const int minor = static_cast<unsigned char>(bytes[7]);
  size_t header_len = 0;
  size_t preamble = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    preamble = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) {
      return Prefixed(name, absl::InvalidArgumentError(absl::StrCat(
                                ".npy is truncated: ", bytes.size(),
                                " bytes, a version ", major, " preamble needs 12")));
    }
    header_len = 0;
    for (int i = 0; i < 4; ++i) {
      header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    }
    preamble = 12;
  } else {
    return Prefixed(name, absl::InvalidArgumentError(absl::StrFormat(
                              "unsupported .npy format version %d.%d (1.0, 2.0, 3.0 are)", major, minor)));
  }
  if (bytes.size() - preamble < header_len) {
    return Prefixed(name, absl::InvalidArgumentError(absl::StrCat(
                              ".npy header is truncated: it claims ", header_len, " bytes but ",
                              bytes.size() - preamble, " follow the preamble")));
  }
  NpyArray array;
  HeaderParser parser(bytes.substr(preamble, header_len));
  EQSIM_RETURN_IF_ERROR(Prefixed(name, parser.Parse(&array)));
  auto item = ItemSizeOf(array.dtype);
  if (!item.ok()) return Prefixed(name, item.status());
  const int64_t n = SafeProduct(array.shape);
  if (n < 0 || n > std::numeric_limits<int64_t>::max() / *item) {
    return Prefixed(name, absl::InvalidArgumentError(
                              absl::StrCat("shape ", ShapeString(array.shape), " is too large")));
  }
  const int64_t need = n * *item;
  const size_t data_off = preamble + header_len;
  const int64_t have = static_cast<int64_t>(bytes.size() - data_off);
  if (have < need) {
    return Prefixed(name, absl::InvalidArgumentError(absl::StrCat(
                              "data is truncated: ", have, " bytes, shape ", ShapeString(array.shape),
                              " of ", array.dtype, " needs ", need)));
  }
  if (have > need) {
    return Prefixed(name, absl::InvalidArgumentError(absl::StrCat(
                              "data has ", have - need, " trailing bytes after shape ",
                              ShapeString(array.shape), " of ", array.dtype, " (", need,
                              " bytes); not a plain .npy array")));
  }
  array.data.assign(bytes.data() + data_off, static_cast<size_t>(need));
  return array;
}

absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open .npy file"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return ReadNpy(ss.str(), path);
}

absl::StatusOr<std::string> WriteNpy(const NpyArray& array) {
  auto item = ItemSizeOf(array.dtype);
  if (!item.ok()) return item.status();
  const int64_t n = SafeProduct(array.shape);
  if (n < 0 || static_cast<int64_t>(array.data.size()) != n * *item) {
    return absl::InvalidArgumentError(absl::StrCat(
        "npy data is ", array.data.size(), " bytes but shape ", ShapeString(array.shape), " of ",
        array.dtype, " needs ", n < 0 ? std::string("overflow") : absl::StrCat(n * *item)));
  }
  std::string dict = absl::StrCat("{'descr': '", array.dtype, "', 'fortran_order': ",
                                  array.fortran_order ? "True" : "False",
                                  ", 'shape': ", ShapeString(array.shape), ", }");
  // Pad with spaces so that magic + version + length + dict + '\n' is a multiple of 64.
  int version = 1;
  size_t preamble = 10;
  size_t total = preamble + dict.size() + 1;
  if (total > 65535 + preamble) {
    version = 2;
    preamble = 12;
    total = preamble + dict.size() + 1;
  }
  const size_t padded = (total + 63) / 64 * 64;
  dict.append(padded - total, ' ');
  dict.push_back('\n');
  const size_t header_len = dict.size();
  std::string out(kMagic, kMagicLen);
  out.push_back(static_cast<char>(version));
  out.push_back('\0');
  for (size_t i = 0; i < (version == 1 ? 2u : 4u); ++i) {
    out.push_back(static_cast<char>((header_len >> (8 * i)) & 0xff));
  }
  out += dict;
  out += array.data;
  return out;
}

absl::StatusOr<std::string> WriteNpyFloat32(const std::vector<int64_t>& shape,
                                            const std::vector<float>& data) {
  const int64_t n = SafeProduct(shape);
  if (n < 0 || n != static_cast<int64_t>(data.size())) {
    return absl::InvalidArgumentError(absl::StrCat("WriteNpyFloat32: ", data.size(),
                                                   " values do not fill shape ", ShapeString(shape)));
  }
  if (!HostIsLittleEndian()) return absl::UnimplementedError("big-endian hosts are not supported");
  NpyArray a;
  a.dtype = "<f4";
  a.shape = shape;
  a.data.assign(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  return WriteNpy(a);
}

absl::Status WriteNpyFile(const std::string& path, std::string_view npy_bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for writing"));
  out.write(npy_bytes.data(), static_cast<std::streamsize>(npy_bytes.size()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> NpyAsFloat32(const NpyArray& array) {
  const bool le = HostIsLittleEndian();
  if (!(array.dtype == "<f4" || (array.dtype == "=f4" && le))) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a float32 ('<f4') array, got dtype '", array.dtype, "'"));
  }
  if (array.fortran_order && array.shape.size() > 1) {
    return absl::InvalidArgumentError("expected a C-order array, got fortran_order=True");
  }
  if (!le) return absl::UnimplementedError("big-endian hosts are not supported");
  std::vector<float> out(array.data.size() / sizeof(float));
  std::memcpy(out.data(), array.data.data(), out.size() * sizeof(float));
  return out;
}

}  // namespace eqsim
