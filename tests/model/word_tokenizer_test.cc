// WordTokenizer: splitting, ids, truncation, vocabulary building / files, and use through
// CreateTokenizer, on real scene captions.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/data/fashion_mnist.h"
#include "model/data/scene.h"
#include "model/text/word_tokenizer.h"
#include "tests/model/test_util.h"

namespace eqsim {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using ::eqsim::testing::ProcessTempDir;

std::string TempPath(const std::string& name) { return ProcessTempDir() + "/" + name; }

TEST(SplitWords, LowercasesAndSplitsPunctuation) {
  EXPECT_THAT(SplitWords("Two RED bags, and a T-shirt!"),
              ElementsAre("two", "red", "bags", ",", "and", "a", "t", "-", "shirt", "!"));
  EXPECT_THAT(SplitWords("  it's\t3 ÉTÉ  "), ElementsAre("it", "'", "s", "3", "été"));
  EXPECT_THAT(SplitWords("...?"), ElementsAre(".", ".", ".", "?"));
  EXPECT_TRUE(SplitWords("   ").empty());
}

TEST(WordTokenizer, IdsSpecialTokensAndPadding) {
  auto tok = WordTokenizer::FromVocabulary({"a", "bag", "red", "two"}, 8);
  EXPECT_EQ(tok->vocab_size(), 8);
  EXPECT_EQ(tok->context_length(), 8);
  EXPECT_EQ(tok->name(), "word (8 ids, context 8)");
  // [SOS]=2, a=4, red=6, bag=5, [EOS]=3, zero padding; unknown words are [UNK]=1.
  EXPECT_THAT(*tok->Encode("A red bag"), ElementsAre(2, 4, 6, 5, 3, 0, 0, 0));
  EXPECT_THAT(*tok->Encode("two blue bags"), ElementsAre(2, 7, 1, 1, 3, 0, 0, 0));
  // Too long: cut keeping EOS last.
  EXPECT_THAT(*tok->Encode("a a a a a a a a a a"), ElementsAre(2, 4, 4, 4, 4, 4, 4, 3));
  EXPECT_THAT(*tok->Encode("a a a a a a"), ElementsAre(2, 4, 4, 4, 4, 4, 4, 3));
  EXPECT_THAT(*tok->Encode("a a a a a"), ElementsAre(2, 4, 4, 4, 4, 4, 3, 0));
  EXPECT_EQ(tok->WordId("red"), 6);
  EXPECT_EQ(tok->WordId("green"), kWordUnk);
}

TEST(WordTokenizer, ZeroContextMeansDefaultAndLongTextsEncode) {
  EXPECT_EQ(WordTokenizer::FromVocabulary({"a"}, 0)->context_length(), kWordContextLength);
  std::string long_text;
  while (long_text.size() < 200 * 1024) long_text += "a b ";
  auto ids = WordTokenizer::FromVocabulary({"a"}, 0)->Encode(long_text);
  ASSERT_TRUE(ids.ok()) << ids.status();  // byte limits are the caller's policy
  EXPECT_EQ(ids->back(), kWordEos);
}

TEST(WordTokenizer, ValidatesText) {
  auto tok = WordTokenizer::FromVocabulary({"a"});
  EXPECT_EQ(tok->Encode("").status().message(), "text is empty");
  EXPECT_EQ(tok->Encode(" \n").status().message(), "text is only whitespace");
  EXPECT_EQ(tok->Encode("ab\xff").status().message(),
            "text is not valid UTF-8 (invalid byte 0xff at offset 2)");
  EXPECT_EQ(tok->EncodeBatch({"a", "a", "\xc3"}).status().message(),
            "text 2: text is not valid UTF-8 (truncated 2-byte sequence at offset 0)");
  auto batch = tok->EncodeBatch({"a", "b a"});
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->n, 2);
  EXPECT_EQ(batch->length, kWordContextLength);
  EXPECT_THAT(std::vector<int64_t>(batch->ids.begin() + 16, batch->ids.begin() + 20), ElementsAre(2, 1, 4, 3));
}

TEST(WordTokenizer, VocabularyFromRealSceneCaptions) {
  auto data = LoadFashionMnist(FashionMnistSplit::kTest);
  ASSERT_TRUE(data.ok()) << data.status();
  std::mt19937_64 rng(7);
  std::vector<std::string> corpus;
  for (int i = 0; i < 300; ++i) corpus.push_back(SceneCaption(RandomScene(*data, 1, 4, rng)));
  const std::vector<std::string> vocab = WordTokenizer::BuildVocabulary(corpus);
  EXPECT_TRUE(std::is_sorted(vocab.begin(), vocab.end()));
  EXPECT_EQ(std::adjacent_find(vocab.begin(), vocab.end()), vocab.end());
  EXPECT_THAT(vocab, ::testing::Contains("and"));
  // Deterministic and independent of corpus order.
  std::vector<std::string> shuffled = corpus;
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  EXPECT_EQ(WordTokenizer::BuildVocabulary(shuffled), vocab);
  // Every caption of the corpus encodes without [UNK]; and two different captions differ.
  auto tok = WordTokenizer::FromVocabulary(vocab, 32);
  for (const std::string& c : corpus) {
    auto ids = tok->Encode(c);
    ASSERT_TRUE(ids.ok()) << c;
    EXPECT_THAT(*ids, ::testing::Not(::testing::Contains(kWordUnk))) << c;
  }
  // min_count drops rare words.
  const auto frequent = WordTokenizer::BuildVocabulary(corpus, 1000000);
  EXPECT_TRUE(frequent.empty());
  EXPECT_THAT(WordTokenizer::BuildVocabulary({"b a", "a c", "a"}, 2), ElementsAre("a"));
}

TEST(WordTokenizer, SaveLoadRoundTrip) {
  auto tok = WordTokenizer::FromVocabulary({"bag", "blue", "sneaker", ","}, 10);
  const std::string path = TempPath("vocab_roundtrip.txt");
  ASSERT_TRUE(tok->Save(path).ok());
  auto loaded = WordTokenizer::Load(path, 10);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->words(), tok->words());
  EXPECT_EQ(*(*loaded)->Encode("blue bag, sneaker"), *tok->Encode("blue bag, sneaker"));
  // Through CreateTokenizer, relative to a search dir.
  config::TokenizerConfig cfg;
  cfg.set_kind(config::TokenizerConfig::WORD);
  cfg.set_vocab_file("vocab_roundtrip.txt");
  auto zero = WordTokenizer::Load(path, 0);
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ((*zero)->context_length(), kWordContextLength);
  auto created = CreateTokenizer(cfg, {"/nonexistent", ProcessTempDir()});
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ((*created)->context_length(), kWordContextLength);
  EXPECT_EQ((*created)->vocab_size(), 8);
  cfg.set_context_length(2);
  EXPECT_EQ(CreateTokenizer(cfg, {ProcessTempDir()}).status().message(),
            "tokenizer.context_length must be >= 3 for WORD, got 2");
  // Files that list the four special tokens first are understood too.
  const std::string with_specials = TempPath("vocab_specials.txt");
  std::ofstream(with_specials) << "[PAD]\r\n[UNK]\r\n[SOS]\r\n[EOS]\r\nbag\r\nblue\r\n";
  auto sp = WordTokenizer::Load(with_specials);
  ASSERT_TRUE(sp.ok()) << sp.status();
  EXPECT_THAT((*sp)->words(), ElementsAre("bag", "blue"));
}

TEST(WordTokenizer, BadVocabularyFiles) {
  auto write = [](const std::string& name, const std::string& content) {
    const std::string p = TempPath(name);
    std::ofstream(p, std::ios::binary) << content;
    return p;
  };
  const std::string dup = write("dup.txt", "bag\nred\nbag\n");
  EXPECT_EQ(WordTokenizer::Load(dup).status().message(), dup + ": line 3: word 'bag' repeats line 1");
  const std::string gap = write("gap.txt", "bag\n\nred\n");
  EXPECT_EQ(WordTokenizer::Load(gap).status().message(), gap + ": line 2 is empty");
  const std::string space = write("space.txt", "ankle boot\n");
  EXPECT_EQ(WordTokenizer::Load(space).status().message(),
            space + ": line 1: word 'ankle boot' contains whitespace");
  const std::string bad = write("bad.txt", "ok\n\xff\n");
  EXPECT_EQ(WordTokenizer::Load(bad).status().message(),
            bad + ": line 2: text is not valid UTF-8 (invalid byte 0xff at offset 0)");
  const std::string empty = write("empty.txt", "");
  EXPECT_EQ(WordTokenizer::Load(empty).status().message(), empty + ": has no words");
  EXPECT_EQ(WordTokenizer::Load(TempPath("missing.txt")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(WordTokenizer::Load(dup, 2).status().message()),
              HasSubstr("context_length must be >= 3"));
}

}  // namespace
}  // namespace eqsim
