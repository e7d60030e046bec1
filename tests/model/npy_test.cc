// .npy reading / writing, checked against files written and read by NumPy itself
// (/usr/bin/python3), and YouCook2-style BGR frames.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/image/npy.h"
#include "model/image/preprocess.h"

namespace eqsim {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("eqsim_npy_test_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs a Python snippet with numpy imported as np and D set to the temp dir; returns stdout.
  std::string Python(const std::string& code) {
    const fs::path script = dir_ / "script.py";
    std::ofstream(script) << "import numpy as np\nD = '" << dir_.string() << "'\n" << code;
    std::string out;
    FILE* p = ::popen(absl::StrCat("/usr/bin/python3 ", script.string()).c_str(), "r");
    EXPECT_NE(p, nullptr);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    EXPECT_EQ(::pclose(p), 0) << code;
    return out;
  }
  std::string Read(const std::string& name) {
    std::ifstream in(dir_ / name, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  std::string Path(const std::string& name) { return (dir_ / name).string(); }

  fs::path dir_;
};

TEST_F(NpyTest, ReadsArraysWrittenByNumpy) {
  Python(
      "np.save(D + '/f.npy', np.arange(6, dtype='<f4').reshape(2, 3) / 4)\n"
      "np.save(D + '/i.npy', np.array([-3, 7, 1 << 40], dtype='<i8'))\n"
      "np.save(D + '/s.npy', np.float32(2.5))\n"
      "np.save(D + '/e.npy', np.zeros((0, 4), dtype='<f4'))\n"
      "np.lib.format.write_array(open(D + '/v2.npy', 'wb'), np.ones(3, dtype='<f4'), version=(2, 0))\n");
  auto f = ReadNpyFile(Path("f.npy"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->dtype, "<f4");
  EXPECT_THAT(f->shape, ::testing::ElementsAre(2, 3));
  EXPECT_FALSE(f->fortran_order);
  auto floats = NpyAsFloat32(*f);
  ASSERT_TRUE(floats.ok());
  EXPECT_THAT(*floats, ::testing::ElementsAre(0.f, 0.25f, 0.5f, 0.75f, 1.f, 1.25f));

  auto i = ReadNpyFile(Path("i.npy"));
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->dtype, "<i8");
  EXPECT_EQ(i->item_size(), 8);
  ASSERT_EQ(i->data.size(), 24u);
  int64_t v[3];
  std::memcpy(v, i->data.data(), 24);
  EXPECT_EQ(v[0], -3);
  EXPECT_EQ(v[2], int64_t{1} << 40);
  EXPECT_THAT(std::string(NpyAsFloat32(*i).status().message()),
              HasSubstr("expected a float32 ('<f4') array, got dtype '<i8'"));

  auto s = ReadNpyFile(Path("s.npy"));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->num_elements(), 1);
  EXPECT_THAT(*NpyAsFloat32(*s), ::testing::ElementsAre(2.5f));

  auto e = ReadNpyFile(Path("e.npy"));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->num_elements(), 0);

  auto v2 = ReadNpyFile(Path("v2.npy"));
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_THAT(*NpyAsFloat32(*v2), ::testing::ElementsAre(1.f, 1.f, 1.f));
}

TEST_F(NpyTest, NumpyReadsWhatWeWrite) {
  std::vector<float> scores = {0.5f, -1.25f, 3.0e-8f, 42.f};
  auto bytes = WriteNpyFloat32({4}, scores);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ((bytes->size() - 16) % 64, 0u);  // header padded to 64 bytes
  ASSERT_TRUE(WriteNpyFile(Path("scores.npy"), *bytes).ok());
  auto m = WriteNpyFloat32({2, 3}, {1, 2, 3, 4, 5, 6});
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(WriteNpyFile(Path("m.npy"), *m).ok());
  const std::string out = Python(
      "a = np.load(D + '/scores.npy'); b = np.load(D + '/m.npy')\n"
      "print(a.dtype, a.shape, repr(a.tolist()), b.shape, b[1, 2])\n");
  EXPECT_EQ(out, "float32 (4,) [0.5, -1.25, 2.999999892949745e-08, 42.0] (2, 3) 6.0\n");
  // Round trip through our reader too.
  auto back = ReadNpy(*bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*NpyAsFloat32(*back), scores);
  EXPECT_THAT(std::string(WriteNpyFloat32({3}, scores).status().message()),
              HasSubstr("4 values do not fill shape (3,)"));
}

TEST_F(NpyTest, YouCook2FramesAreBgrToRgb) {
  Python(
      "f = np.zeros((4, 5, 3), dtype=np.uint8)\n"
      "f[..., 0] = 10; f[..., 1] = 20; f[..., 2] = 30\n"  // B G R
      "f[1, 2] = (1, 2, 3)\n"
      "np.save(D + '/frame.npy', f)\n"
      "np.save(D + '/float.npy', f.astype(np.float32))\n"
      "np.save(D + '/gray.npy', f[..., 0])\n"
      "np.save(D + '/four.npy', np.zeros((4, 5, 4), np.uint8))\n"
      "np.save(D + '/fortran.npy', np.asfortranarray(f))\n"
      "open(D + '/cut.npy', 'wb').write(open(D + '/frame.npy', 'rb').read()[:-7])\n"
      "open(D + '/bad.npy', 'wb').write(b'PK\\x03\\x04 not an npy')\n");
  auto rgb = LoadNpyFrameRgb(Path("frame.npy"));
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  EXPECT_EQ(rgb->rows, 4);
  EXPECT_EQ(rgb->cols, 5);
  EXPECT_EQ(rgb->at<cv::Vec3b>(0, 0), cv::Vec3b(30, 20, 10));
  EXPECT_EQ(rgb->at<cv::Vec3b>(1, 2), cv::Vec3b(3, 2, 1));
  // A frame can be sent on as a lossless PNG.
  auto again = DecodeImageRgb(EncodePng(*rgb));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(cv::norm(*again, *rgb, cv::NORM_INF), 0);

  const std::string p = Path("");
  EXPECT_EQ(LoadNpyFrameRgb(Path("float.npy")).status().message(),
            absl::StrCat(Path("float.npy"), ": frame dtype is '<f4', expected uint8 ('|u1')"));
  EXPECT_EQ(LoadNpyFrameRgb(Path("gray.npy")).status().message(),
            absl::StrCat(Path("gray.npy"), ": frame shape is (4, 5), expected (H, W, 3) with H, W > 0"));
  EXPECT_EQ(LoadNpyFrameRgb(Path("four.npy")).status().message(),
            absl::StrCat(Path("four.npy"), ": frame shape is (4, 5, 4), expected (H, W, 3) with H, W > 0"));
  EXPECT_EQ(LoadNpyFrameRgb(Path("fortran.npy")).status().message(),
            absl::StrCat(Path("fortran.npy"), ": frame is in Fortran order; expected C order"));
  EXPECT_EQ(LoadNpyFrameRgb(Path("cut.npy")).status().message(),
            absl::StrCat(Path("cut.npy"), ": data is truncated: 53 bytes, shape (4, 5, 3) of |u1 needs 60"));
  EXPECT_EQ(LoadNpyFrameRgb(Path("bad.npy")).status().message(),
            absl::StrCat(Path("bad.npy"),
                         ": not a .npy file: bad magic (first bytes: 50 4b 03 04 20 6e 6f 74; "
                         "expected 93 4e 55 4d 50 59)"));
  EXPECT_EQ(LoadNpyFrameRgb(Path("missing.npy")).status().code(), absl::StatusCode::kNotFound);
}

// Random corruption of a valid file: an error or a consistent array, never a crash.
TEST(Npy, SurvivesCorruptedFiles) {
  auto good = WriteNpyFloat32({3, 4}, std::vector<float>(12, 1.5f));
  ASSERT_TRUE(good.ok());
  std::mt19937 rng(5);
  int errors = 0;
  for (int t = 0; t < 3000; ++t) {
    std::string b = *good;
    if (t % 3 == 0) {
      b.resize(rng() % b.size());
    } else {
      for (int f = 0; f < 1 + static_cast<int>(rng() % 3); ++f) {
        b[rng() % std::min<size_t>(b.size(), t % 3 == 1 ? 80 : b.size())] = static_cast<char>(rng() & 0xff);
      }
    }
    auto a = ReadNpy(b);
    if (a.ok()) {
      EXPECT_EQ(static_cast<int64_t>(a->data.size()), a->num_elements() * a->item_size());
    } else {
      ++errors;
      EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    }
    auto frame = NpyFrameRgbFromBytes(b, "x.npy");  // wrong dtype / shape at best
    EXPECT_FALSE(frame.ok());
  }
  EXPECT_GT(errors, 1000);
}

TEST(Npy, MalformedHeaders) {
  auto npy = [](std::string dict, int major = 1) {
    std::string out("\x93NUMPY", 6);
    out.push_back(static_cast<char>(major));
    out.push_back(0);
    out.push_back(static_cast<char>(dict.size() & 0xff));
    out.push_back(static_cast<char>(dict.size() >> 8));
    return out + dict;
  };
  EXPECT_THAT(std::string(ReadNpy(npy("{'descr': '|u1', 'shape': (1,), }")).status().message()),
              HasSubstr("missing key 'fortran_order'"));
  EXPECT_THAT(std::string(ReadNpy(npy("{'descr': '>c32', 'fortran_order': False, 'shape': (1,), }")).status().message()),
              HasSubstr("unsupported dtype '>c32'"));
  EXPECT_THAT(std::string(ReadNpy(npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }")).status().message()),
              HasSubstr("structured dtypes"));
  EXPECT_THAT(std::string(ReadNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }")).status().message()),
              HasSubstr("shape entries must be non-negative integers"));
  EXPECT_THAT(std::string(ReadNpy(npy("{}", 7)).status().message()),
              HasSubstr("unsupported .npy format version 7.0"));
  std::string claims_more = npy("{}");
  claims_more[8] = 100;
  EXPECT_THAT(std::string(ReadNpy(claims_more).status().message()),
              HasSubstr(".npy header is truncated: it claims 100 bytes but 2 follow the preamble"));
  EXPECT_THAT(std::string(ReadNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }") + std::string(12, '\0')).status().message()),
              HasSubstr("4 trailing bytes"));
  EXPECT_THAT(std::string(ReadNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }")).status().message()),
              HasSubstr("is too large"));
  EXPECT_THAT(std::string(ReadNpy("").status().message()), HasSubstr("bad magic"));
}

}  // namespace
}  // namespace eqsim
