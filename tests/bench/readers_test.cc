#include "model/bench/readers.h"

#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/image/preprocess.h"
#include "tests/bench/test_util.h"

namespace eqsim {
namespace {

using ::eqsim::testing::KeepScores;
using ::eqsim::testing::kPython;
using ::eqsim::testing::RootOpts;
using ::eqsim::testing::TempDir;
using ::eqsim::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TinyPng(uint8_t r, uint8_t g, uint8_t b) {
  cv::Mat m(4, 4, CV_8UC3, cv::Scalar(r, g, b));
  return EncodePng(m);
}

absl::StatusOr<Benchmark> ReadString(BenchmarkFormat f, const TempDir& dir, const std::string& name,
                                     const std::string& content, ReadOptions opts = {}) {
  WriteFile(dir / name, content);
  if (opts.image_root.empty()) opts.image_root = dir / "img";
  return ReadBenchmark(f, dir / name, opts);
}

TEST(FormatTest, ParseNames) {
  EXPECT_EQ(*ParseBenchmarkFormat("winoground"), BenchmarkFormat::kWinoground);
  EXPECT_EQ(*ParseBenchmarkFormat("eqben-pairs"), BenchmarkFormat::kEqbenPairs);
  EXPECT_EQ(*ParseBenchmarkFormat("EQBEN_VIDEO"), BenchmarkFormat::kEqbenVideo);
  EXPECT_EQ(*ParseBenchmarkFormat("eqben-ag"), BenchmarkFormat::kEqbenAg);
  EXPECT_EQ(*ParseBenchmarkFormat("eqben-leaderboard"), BenchmarkFormat::kEqbenLeaderboard);
  EXPECT_EQ(*ParseBenchmarkFormat("valse"), BenchmarkFormat::kValse);
  EXPECT_EQ(ParseBenchmarkFormat("coco").status().message(),
            "unknown benchmark format 'coco'; expected one of winoground, eqben-pairs, "
            "eqben-video, eqben-ag, eqben-leaderboard, valse");
  for (auto f :
       {BenchmarkFormat::kWinoground, BenchmarkFormat::kValse, BenchmarkFormat::kEqbenAg}) {
    EXPECT_EQ(*ParseBenchmarkFormat(BenchmarkFormatName(f)), f);
  }
  // Numeric values mirror eqsim.v1.BenchmarkFormat.
  EXPECT_EQ(static_cast<int>(BenchmarkFormat::kWinoground), 1);
  EXPECT_EQ(static_cast<int>(BenchmarkFormat::kValse), 6);
}

TEST(WinogroundTest, StemsSubsetsAndMissingImages) {
  TempDir dir;
  WriteFile(dir / "img/ex_0_img_0.png", TinyPng(1, 2, 3));
  WriteFile(dir / "img/ex_0_img_1.png", TinyPng(4, 5, 6));
  WriteFile(dir / "img/ex_1_img_0.png", TinyPng(1, 2, 3));
  // ex_1_img_1.png is missing.
  const std::string jsonl =
      R"({"id": 0, "caption_0": "an old person kisses a young person", "caption_1": "a young person kisses an old person", "tag": "adjective-Age", "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object", "image_0": "ex_0_img_0", "image_1": "ex_0_img_1"})"
      "\n\n"
      R"({"id": 1, "caption_0": "a", "caption_1": "b", "image_0": "ex_1_img_0", "image_1": "ex_1_img_1"})"
      "\n";
  auto b = ReadString(BenchmarkFormat::kWinoground, dir, "examples.jsonl", jsonl);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->kind, SampleKind::kPair);
  ASSERT_EQ(b->samples.size(), 2u);
  const Sample& s0 = b->samples[0];
  EXPECT_EQ(s0.subset, "Object");
  EXPECT_EQ(s0.index, 0);
  EXPECT_EQ(s0.images[0].path, dir / "img/ex_0_img_0.png");
  EXPECT_EQ(s0.images[1].annotation, "ex_0_img_1.png");
  EXPECT_THAT(s0.captions, ElementsAre("an old person kisses a young person",
                                       "a young person kisses an old person"));
  EXPECT_TRUE(s0.skip_reason.empty());
  const Sample& s1 = b->samples[1];
  EXPECT_EQ(s1.subset, "all");  // no collapsed_tag
  EXPECT_EQ(s1.index, 1);       // blank lines do not count
  EXPECT_EQ(s1.skip_reason, "image_1 'ex_1_img_1.png': file not found");
  EXPECT_THAT(b->subsets, ElementsAre("Object", "all"));
}

TEST(WinogroundTest, Errors) {
  TempDir dir;
  WriteFile(dir / "img/.keep", "");
  auto b = ReadString(BenchmarkFormat::kWinoground, dir, "w.jsonl",
                      "{\"id\": 7, \"caption_0\": \"x\", \"caption_1\": 3, \"image_0\": \"a\", "
                      "\"image_1\": \"b\"}\n");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(b.status().message(), dir / "w.jsonl" +
                                      ": entry 0 (line 1, id 7): field 'caption_1': expected a "
                                      "string, got number");
  b = ReadString(BenchmarkFormat::kWinoground, dir, "w.jsonl", "{\"id\": 1}\n{oops\n");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(),
            dir / "w.jsonl" + ": entry 0 (line 1, id 1): field 'caption_0': missing");
  b = ReadString(BenchmarkFormat::kWinoground, dir, "w.jsonl",
                 "\n{\"id\": 1, \"caption_0\": \"x\", \"caption_1\": \"y\", \"image_0\": \"a\", "
                 "\"image_1\": \"b\"}\n{oops\n");
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(std::string(b.status().message()),
              HasSubstr(dir / "w.jsonl" + ": line 3: not valid JSON"));
}

TEST(EqbenPairsTest, ListLayoutAndSubsetFromFileName) {
  TempDir dir;
  WriteFile(dir / "img/kubric/a0.png", "x");
  WriteFile(dir / "img/kubric/a1.png", "x");
  const std::string json = R"([
    {"image0": "kubric/a0.png", "image1": "kubric/a1.png", "caption0": "a cube left of a ball",
     "caption1": "a ball left of a cube"},
    {"image0": "kubric/a1.png", "image1": "kubric/a0.png", "caption0": "c", "caption1": "d"}
  ])";
  auto b = ReadString(BenchmarkFormat::kEqbenPairs, dir, "eqbenkubric_loc.json", json);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(b->samples.size(), 2u);
  EXPECT_EQ(b->samples[0].subset, "eqbenkubric_loc");
  EXPECT_EQ(b->samples[1].images[0].path, dir / "img/kubric/a1.png");
  EXPECT_EQ(b->samples[1].captions[1], "d");
  EXPECT_FALSE(b->samples[0].images[0].is_npy_bgr);

  ReadOptions opts;
  opts.subset_name = "kubric-location";
  b = ReadString(BenchmarkFormat::kEqbenPairs, dir, "eqbenkubric_loc.json", json, opts);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->samples[0].subset, "kubric-location");

  b = ReadString(BenchmarkFormat::kEqbenPairs, dir, "eqben.json",
                 R"([{"image0": "kubric/a0.png", "image1": "kubric/a1.png", "caption0": "c"}])");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(), dir / "eqben.json" + ": entry 0: field 'caption1': missing");
  b = ReadString(BenchmarkFormat::kEqbenPairs, dir, "eqben.json", R"({"a": 1})");
  EXPECT_EQ(b.status().message(),
            dir / "eqben.json" +
                ": expected a JSON list of {image0, image1, caption0, caption1}, got object");
  b = ReadString(BenchmarkFormat::kEqbenPairs, dir, "eqben.json", R"([1])");
  EXPECT_EQ(b.status().message(),
            dir / "eqben.json" +
                ": entry 0: expected an object {image0, image1, caption0, caption1}, got number");
}

TEST(EqbenVideoTest, GebcMapWithVideoInMessages) {
  TempDir dir;
  WriteFile(dir / "img/v1/f1.jpg", "x");
  WriteFile(dir / "img/v1/f2.jpg", "x");
  const std::string json = R"({
    "v1": [{"image0": "v1/f1.jpg", "image1": "v1/f2.jpg", "caption0": "p", "caption1": "q"}],
    "abc": [{"image0": "v1/f1.jpg", "image1": "v1/f2.jpg", "caption0": "p", "caption1": "q"},
            {"image0": "v1/f1.jpg", "image1": "v1/f2.jpg", "caption0": "p", "caption1": 5}]
  })";
  auto b = ReadString(BenchmarkFormat::kEqbenVideo, dir, "eqben.json", json);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(),
            dir / "eqben.json" +
                ": entry 2 (video 'abc', item 1): field 'caption1': expected a string, got number");
  ReadOptions opts;
  opts.limit = 2;  // stops before the bad entry
  b = ReadString(BenchmarkFormat::kEqbenVideo, dir, "eqbengebc.json", json, opts);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(b->samples.size(), 2u);
  EXPECT_EQ(b->samples[0].subset, "eqbengebc");
  EXPECT_EQ(b->samples[1].key, "video 'abc', item 0");  // file order kept
  EXPECT_EQ(b->samples[1].index, 1);
  EXPECT_EQ(b->entries_in_file, 3);
  EXPECT_EQ(b->filtered_out, 1);
}

TEST(EqbenVideoTest, YouCook2NpyFramesAreBgr) {
  TempDir dir;
  // A 2x3 frame whose every pixel is B=10, G=20, R=30, as numpy writes it.
  const std::string script =
      "import numpy as np, sys\n"
      "a = np.zeros((2, 3, 3), dtype=np.uint8); a[..., 0] = 10; a[..., 1] = 20; a[..., 2] = 30\n"
      "np.save(sys.argv[1], a)\n";
  WriteFile(dir / "make.py", script);
  ::eqsim::testing::MakeDirs(dir / "img/yc");
  ASSERT_EQ(::eqsim::testing::RunShell(std::string(kPython) + " " + (dir / "make.py") + " " +
                                       (dir / "img/yc/f0.npy")),
            0);
  ASSERT_EQ(::eqsim::testing::RunShell(std::string(kPython) + " " + (dir / "make.py") + " " +
                                       (dir / "img/yc/f1.npy")),
            0);
  const std::string json = R"({"vid": [{"image0": "yc/f0.npy", "image1": "yc/f1.npy",
                                        "caption0": "add salt", "caption1": "add pepper"}]})";
  auto b = ReadString(BenchmarkFormat::kEqbenVideo, dir, "eqbenyoucook2.json", json);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(b->samples.size(), 1u);
  const ImageRef& ref = b->samples[0].images[0];
  EXPECT_TRUE(ref.is_npy_bgr);
  auto bytes = LoadImageBytes(ref);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(SniffImageFormat(*bytes), "PNG");
  auto rgb = DecodeImageRgb(*bytes);
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  ASSERT_EQ(rgb->rows, 2);
  ASSERT_EQ(rgb->cols, 3);
  const cv::Vec3b px = rgb->at<cv::Vec3b>(1, 2);
  EXPECT_EQ(px[0], 30);  // R
  EXPECT_EQ(px[1], 20);  // G
  EXPECT_EQ(px[2], 10);  // B

  // A corrupt frame fails at load time with the file named.
  WriteFile(dir / "img/yc/bad.npy", "not numpy");
  ImageRef bad{dir / "img/yc/bad.npy", "yc/bad.npy", true};
  auto err = LoadImageBytes(bad);
  ASSERT_FALSE(err.ok());
  EXPECT_THAT(std::string(err.status().message()), HasSubstr("bad.npy"));
}

TEST(EqbenAgTest, NestedSubjectsAndCaptionLists) {
  TempDir dir;
  WriteFile(dir / "img/ag/1.png", "x");
  WriteFile(dir / "img/ag/2.png", "x");
  const std::string json = R"({
    "vidA.mp4": {
      "person1": [
        {"image0": "ag/1.png", "image1": "ag/2.png",
         "caption0": ["a person holds a cup", "someone holding a cup"],
         "caption1": ["a person drinks from a cup"]}],
      "person2": [
        {"image0": "ag/2.png", "image1": "ag/1.png", "caption0": ["x"], "caption1": ["y"]},
        {"image0": "ag/2.png", "image1": "ag/1.png", "caption0": ["x"], "caption1": []}]
    }
  })";
  ReadOptions opts;
  opts.limit = 2;
  auto b = ReadString(BenchmarkFormat::kEqbenAg, dir, "eqbenag.json", json, opts);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(b->samples.size(), 2u);
  EXPECT_THAT(b->samples[0].captions,
              ElementsAre("a person holds a cup", "a person drinks from a cup"));
  EXPECT_EQ(b->samples[1].key, "video 'vidA.mp4', subject 'person2', item 0");
  EXPECT_EQ(b->samples[0].subset, "eqbenag");
  b = ReadString(BenchmarkFormat::kEqbenAg, dir, "eqbenag.json", json);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(),
            dir / "eqbenag.json" +
                ": entry 2 (video 'vidA.mp4', subject 'person2', item 1): field 'caption1': "
                "expected a list of strings, got an empty list");
  b = ReadString(BenchmarkFormat::kEqbenAg, dir, "eqbenag.json", R"({"v": [1]})");
  EXPECT_EQ(b.status().message(),
            dir / "eqbenag.json" +
                ": video 'v': expected an object mapping subject ids to lists, got list");
}

TEST(LeaderboardTest, SubsetFromPathPrefixAndOrder) {
  TempDir dir;
  WriteFile(dir / "img/eqbenag/a.png", "x");
  WriteFile(dir / "img/eqbenkubric_loc/b.png", "x");
  const std::string json = R"([
    {"image": "eqbenag/a.png", "caption": "one"},
    {"image": "eqbenkubric_loc/b.png", "caption": "two"},
    {"image": "eqbenag/missing.png", "caption": "three"},
    {"image": "eqbenag/a.png", "caption": "four"}
  ])";
  auto b = ReadString(BenchmarkFormat::kEqbenLeaderboard, dir, "eqben_test.json", json);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->kind, SampleKind::kSingle);
  ASSERT_EQ(b->samples.size(), 4u);
  EXPECT_EQ(b->samples[1].subset, "eqbenkubric_loc");
  EXPECT_EQ(b->samples[2].skip_reason, "image 'eqbenag/missing.png': file not found");
  EXPECT_THAT(b->subsets, ElementsAre("eqbenag", "eqbenkubric_loc"));
  ReadOptions opts;
  opts.subsets = {"eqbenkubric_loc"};
  b = ReadString(BenchmarkFormat::kEqbenLeaderboard, dir, "eqben_test.json", json, opts);
  ASSERT_TRUE(b.ok());
  ASSERT_EQ(b->samples.size(), 1u);
  EXPECT_EQ(b->samples[0].index, 1);
  opts.subsets = {"nope"};
  b = ReadString(BenchmarkFormat::kEqbenLeaderboard, dir, "eqben_test.json", json, opts);
  EXPECT_EQ(b.status().message(),
            dir / "eqben_test.json" + ": no entry belongs to the requested subsets (nope)");
}

std::string ValseEntry(const std::string& dataset, const std::string& image, int mturk_caption,
                       const std::string& phenomenon) {
  return "{\"dataset\": \"" + dataset +
         "\", \"original_split\": \"test\", \"dataset_idx\": 1, \"linguistic_phenomena\": \"" +
         phenomenon + "\", \"image_file\": \"" + image +
         "\", \"caption\": \"There are two dogs.\", \"foil\": \"There are three dogs.\", "
         "\"classes\": 2, \"classes_foil\": 3, \"mturk\": {\"caption\": " +
         std::to_string(mturk_caption) + ", \"foil\": 0, \"other\": 0}}";
}

TEST(ValseTest, ValidityFilterAndRootsPerSource) {
  TempDir dir;
  WriteFile(dir / "coco/1.jpg", "x");
  WriteFile(dir / "v7w/2.jpg", "x");
  const std::string json = "{\"a\": " + ValseEntry("coco2017", "1.jpg", 3, "counting") +
                           ", \"b\": " + ValseEntry("visual7w", "2.jpg", 1, "counting") +
                           ", \"c\": " + ValseEntry("visual7w", "2.jpg", 2, "plurals") + "}";
  ReadOptions opts;
  opts.image_roots = {{"coco2017", dir / "coco"}, {"visual7w", dir / "v7w"}};
  opts.image_root = dir / "coco";
  auto b = ReadString(BenchmarkFormat::kValse, dir, "valse.json", json, opts);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->kind, SampleKind::kCaptionFoil);
  ASSERT_EQ(b->samples.size(), 2u);  // "b" has mturk.caption 1 < 2
  EXPECT_EQ(b->filtered_out, 1);
  EXPECT_EQ(b->samples[0].subset, "counting");
  EXPECT_EQ(b->samples[1].subset, "plurals");
  EXPECT_EQ(b->samples[1].index, 2);
  EXPECT_EQ(b->samples[1].images[0].path, dir / "v7w/2.jpg");
  EXPECT_THAT(b->samples[0].captions, ElementsAre("There are two dogs.", "There are three dogs."));
  opts.valse_all = true;
  b = ReadString(BenchmarkFormat::kValse, dir, "valse.json", json, opts);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->samples.size(), 3u);

  ReadOptions no_root;
  no_root.image_roots = {{"coco2017", dir / "coco"}};
  no_root.image_root = "";
  WriteFile(dir / "valse.json", json);
  b = ReadBenchmark(BenchmarkFormat::kValse, dir / "valse.json", no_root);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().message(),
            dir / "valse.json" +
                ": entry 2 (id 'c'): field 'dataset': no image root for source dataset "
                "'visual7w' (give image_roots / --valse-root visual7w=DIR, or an image root for "
                "all sources)");

  b = ReadString(BenchmarkFormat::kValse, dir, "valse.json",
                 R"({"x": {"dataset": "coco2017", "linguistic_phenomena": "counting",
                           "image_file": "1.jpg", "caption": "a", "foil": "b"}})",
                 opts = RootOpts(dir / "coco"));
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(std::string(b.status().message()),
              HasSubstr(": entry 0 (id 'x'): field 'mturk': missing (the validity filter"));
}

TEST(PathTest, EscapesAreRefused) {
  TempDir dir;
  WriteFile(dir / "root/in.png", "x");
  WriteFile(dir / "secret.png", "x");
  ASSERT_EQ(symlink((dir / "secret.png").c_str(), (dir / "root/link.png").c_str()), 0);
  ASSERT_EQ(symlink(dir.path().c_str(), (dir / "root/updir").c_str()), 0);
  ::eqsim::testing::MakeDirs(dir / "root/sub");
  ASSERT_EQ(symlink((dir / "root/in.png").c_str(), (dir / "root/sub/ok.png").c_str()), 0);
  const std::string root = dir / "root";

  auto ok = ResolveConfinedPath(root, "./sub//ok.png", "image0");
  ASSERT_TRUE(ok.ok()) << ok.status();  // a symlink staying inside is fine
  EXPECT_EQ(*ok, root + "/sub/ok.png");
  EXPECT_TRUE(ResolveConfinedPath(root, "not/there.png").ok());  // missing: not an escape

  auto e = ResolveConfinedPath(root, "../secret.png", "image0");
  EXPECT_EQ(e.status().message(),
            "image0 '../secret.png': '..' is refused; the path must stay under the image root");
  e = ResolveConfinedPath(root, "sub/../../secret.png", "image0");
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  e = ResolveConfinedPath(root, dir / "secret.png", "image0");
  EXPECT_EQ(e.status().message(),
            "image0 '" + (dir / "secret.png") +
                "': absolute paths are refused; paths must be relative to the image root");
  e = ResolveConfinedPath(root, "link.png", "image0");
  EXPECT_THAT(std::string(e.status().message()),
              HasSubstr("image0 'link.png': resolves outside the image root"));
  e = ResolveConfinedPath(root, "updir/secret.png", "image0");
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("resolves outside the image root"));
  e = ResolveConfinedPath(root, "updir/missing.png", "image0");  // escape even when missing
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("resolves outside the image root"));
  e = ResolveConfinedPath(root, "", "image0");
  EXPECT_EQ(e.status().message(), "image0: path is empty");

  // Through a reader: the whole benchmark is refused, naming entry and field.
  WriteFile(dir / "p.json", R"([{"image0": "in.png", "image1": "link.png", "caption0": "a",
                                 "caption1": "b"}])");
  auto b = ReadBenchmark(BenchmarkFormat::kEqbenPairs, dir / "p.json", RootOpts(root));
  ASSERT_FALSE(b.ok());
  EXPECT_THAT(std::string(b.status().message()),
              HasSubstr(dir / "p.json" + ": entry 0: field 'image1' 'link.png': resolves outside"));
}

TEST(ReaderTest, MissingFilesAndRoots) {
  TempDir dir;
  auto b = ReadBenchmark(BenchmarkFormat::kEqbenPairs, dir / "nope.json", RootOpts(dir.path()));
  EXPECT_EQ(b.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(b.status().message(),
            "annotation file '" + (dir / "nope.json") + "': No such file or directory");
  WriteFile(dir / "p.json", "[]");
  b = ReadBenchmark(BenchmarkFormat::kEqbenPairs, dir / "p.json", RootOpts(dir / "nothere"));
  EXPECT_EQ(b.status().message(),
            "image root '" + (dir / "nothere") + "': No such file or directory");
  b = ReadBenchmark(BenchmarkFormat::kEqbenPairs, dir / "p.json", ReadOptions{});
  EXPECT_EQ(b.status().message(), "image root is not set");
  b = ReadBenchmark(BenchmarkFormat::kEqbenPairs, dir / "p.json", RootOpts(dir / "p.json"));
  EXPECT_EQ(b.status().message(), "image root '" + (dir / "p.json") + "': not a directory");
  WriteFile(dir / "bad.json", "[{\"image0\": ");
  b = ReadBenchmark(BenchmarkFormat::kEqbenPairs, dir / "bad.json", RootOpts(dir.path()));
  EXPECT_THAT(std::string(b.status().message()),
              HasSubstr(dir / "bad.json" + ": not valid JSON: "));
}

}  // namespace
}  // namespace eqsim
