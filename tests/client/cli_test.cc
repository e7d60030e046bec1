// The `eqsim` CLI in-process, without a server: flag parsing per subcommand, usage errors
// and their exit codes, the load-test mix parser and percentiles.
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/declare.h"
#include "client/cli/args.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"
#include "client/cli/loadtest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_DECLARE_FLAG(std::vector<std::string>, target);
ABSL_DECLARE_FLAG(absl::Duration, timeout);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(int32_t, concurrency);

namespace eqsim::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::vector<std::string> kAllowed = {"target", "json", "timeout", "text", "concurrency"};

TEST(ParseArgs, SpellingsRepetitionsAndPositionals) {
  auto p = ParseArgs({"--target", "a:1", "--target=b:2,c:3", "--json", "--text", "x, y",
                      "--text=z", "ID", "--concurrency", "7", "--timeout=250ms", "--", "--text"},
                     kAllowed, "test");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(absl::GetFlag(FLAGS_target), ElementsAre("a:1", "b:2", "c:3"));
  EXPECT_TRUE(absl::GetFlag(FLAGS_json));
  EXPECT_EQ(absl::GetFlag(FLAGS_concurrency), 7);
  EXPECT_EQ(absl::GetFlag(FLAGS_timeout), absl::Milliseconds(250));
  EXPECT_THAT(p->All("text"), ElementsAre("x, y", "z"));  // verbatim, commas kept
  EXPECT_THAT(p->positional, ElementsAre("ID", "--text"));
  EXPECT_TRUE(p->Has("concurrency"));
  EXPECT_FALSE(p->help);

  p = ParseArgs({"--nojson", "--help"}, kAllowed, "test");
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(absl::GetFlag(FLAGS_json));
  EXPECT_TRUE(p->help);
}

TEST(ParseArgs, PreciseErrors) {
  auto msg = [](std::vector<std::string> args) {
    auto p = ParseArgs(args, kAllowed, "embed");
    EXPECT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(p.status().message());
  };
  EXPECT_THAT(msg({"--bogus"}), HasSubstr("unknown flag --bogus for `eqsim embed`"));
  EXPECT_THAT(msg({"--model-version=3"}), HasSubstr("--model-version does not apply to `eqsim embed`"));
  EXPECT_THAT(msg({"--concurrency"}), HasSubstr("--concurrency needs a value"));
  EXPECT_THAT(msg({"--concurrency=many"}), HasSubstr("invalid value 'many' for --concurrency"));
  EXPECT_THAT(msg({"--timeout", "soon"}), HasSubstr("invalid value 'soon' for --timeout"));
  EXPECT_THAT(msg({"--nojson=1"}), HasSubstr("takes no value"));
}

TEST(RunCli, UsageErrorsReturnTwoAndHelpZero) {
  EXPECT_EQ(RunCli({}), kExitUsage);
  EXPECT_EQ(RunCli({"frobnicate"}), kExitUsage);
  EXPECT_EQ(RunCli({"eval"}), kExitUsage);
  EXPECT_EQ(RunCli({"eval", "nope"}), kExitUsage);
  EXPECT_EQ(RunCli({"embed", "--unknown-flag"}), kExitUsage);
  EXPECT_EQ(RunCli({"embed"}), kExitUsage);                      // nothing to embed
  EXPECT_EQ(RunCli({"embed", "--image", "/nonexistent.png"}), kExitUsage);
  EXPECT_EQ(RunCli({"score", "--text", "a"}), kExitUsage);       // no image
  EXPECT_EQ(RunCli({"eval", "get"}), kExitUsage);                // no id
  EXPECT_EQ(RunCli({"eval", "get", "a", "b"}), kExitUsage);
  EXPECT_EQ(RunCli({"eval", "submit", "--format", "imagenet", "--annotation", "x"}), kExitUsage);
  EXPECT_EQ(RunCli({"eval", "submit", "--format", "valse"}), kExitUsage);  // no annotation
  EXPECT_EQ(RunCli({"eval", "list", "--state", "sleeping"}), kExitUsage);
  EXPECT_EQ(RunCli({"eval", "scores", "ID"}), kExitUsage);       // no --output
  EXPECT_EQ(RunCli({"eval-local", "--format", "winoground"}), kExitUsage);
  EXPECT_EQ(RunCli({"loadtest", "--mix", "video=1"}), kExitUsage);
  EXPECT_EQ(RunCli({"models", "--retries", "0"}), kExitUsage);
  EXPECT_EQ(RunCli({"models", "--target", "localhost:1", "--token-file", "/nonexistent"}),
            kExitUsage);
  EXPECT_EQ(RunCli({"help"}), kExitOk);
  EXPECT_EQ(RunCli({"loadtest", "--help"}), kExitOk);
  EXPECT_EQ(RunCli({"help", "eval", "watch"}), kExitOk);
}

TEST(RunCli, UnreachableServerIsAnRpcError) {
  EXPECT_EQ(RunCli({"models", "--target", "127.0.0.1:1", "--retries", "1", "--timeout", "2s"}),
            kExitRpcError);
}

TEST(RunCli, HealthUsageErrorsAndADeadPort) {
  EXPECT_EQ(RunCli({"health", "--wait", "-1s"}), kExitUsage);
  EXPECT_EQ(RunCli({"health", "--wait-interval", "0s"}), kExitUsage);
  EXPECT_EQ(RunCli({"health", "extra-argument"}), kExitUsage);
  EXPECT_EQ(RunCli({"health", "--wait", "soon"}), kExitUsage);
  EXPECT_EQ(RunCli({"health", "--tls-cert", "/nonexistent.pem"}), kExitUsage);  // no key
  EXPECT_EQ(RunCli({"health", "--tls-ca", "/nonexistent.pem"}), kExitUsage);
  EXPECT_EQ(RunCli({"health", "--help"}), kExitOk);
  // Nothing listens on port 1: unreachable is exit 1, with or without a (short) --wait.
  EXPECT_EQ(RunCli({"health", "--target", "127.0.0.1:1", "--timeout", "2s"}), kExitRpcError);
  EXPECT_EQ(RunCli({"health", "--target", "127.0.0.1:1", "--wait", "1s", "--wait-interval",
                    "200ms", "--noprogress"}),
            kExitRpcError);
}

TEST(RunCli, ShardAndCompareUsageErrors) {
  const std::vector<std::string> base = {"eval-local", "--format", "winoground",
                                         "--annotation", "/nonexistent.jsonl"};
  // The shard flags are checked before the annotation is read: the message names them.
  auto stderr_of = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(RunCli(a), kExitUsage);
    return ::testing::internal::GetCapturedStderr();
  };
  EXPECT_THAT(stderr_of({"--num-shards", "0"}), HasSubstr("--num-shards must be at least 1"));
  EXPECT_THAT(stderr_of({"--num-shards", "-3"}), HasSubstr("--num-shards must be at least 1"));
  EXPECT_THAT(stderr_of({"--num-shards", "4", "--shard-index", "4"}),
              HasSubstr("--shard-index must be in [0, 4)"));
  EXPECT_THAT(stderr_of({"--num-shards", "4", "--shard-index", "-1"}),
              HasSubstr("--shard-index must be in [0, 4)"));
  EXPECT_THAT(stderr_of({"--shard-index", "1"}),  // N defaults to 1
              HasSubstr("--shard-index must be in [0, 1)"));
  EXPECT_THAT(stderr_of({"--num-shards", "x"}), HasSubstr("invalid value 'x' for --num-shards"));
  // Valid shard flags get as far as reading the (missing) annotation.
  EXPECT_THAT(stderr_of({"--num-shards", "4", "--shard-index", "3"}),
              HasSubstr("nonexistent.jsonl"));
  EXPECT_EQ(RunCli({"eval", "compare"}), kExitUsage);  // no ID
  EXPECT_EQ(RunCli({"eval", "compare", "--help"}), kExitOk);
  EXPECT_EQ(RunCli({"eval", "compare", "a", "b", "--target", "127.0.0.1:1", "--retries", "1",
                    "--timeout", "2s"}),
            kExitRpcError);
}

TEST(ParseMix, WeightsAreNormalisedAndErrorsNamed) {
  auto m = ParseMix("image=2, text=1,score=1");
  ASSERT_TRUE(m.ok());
  EXPECT_DOUBLE_EQ(m->image, 0.5);
  EXPECT_DOUBLE_EQ(m->text, 0.25);
  EXPECT_DOUBLE_EQ(m->score, 0.25);
  m = ParseMix("text=1");
  ASSERT_TRUE(m.ok());
  EXPECT_DOUBLE_EQ(m->image, 0);
  EXPECT_DOUBLE_EQ(m->text, 1);
  EXPECT_THAT(ParseMix("audio=1").status().message(), HasSubstr("unknown kind 'audio'"));
  EXPECT_THAT(ParseMix("image=-1").status().message(), HasSubstr("non-negative"));
  EXPECT_THAT(ParseMix("image=0").status().message(), HasSubstr("no positive weight"));
}

TEST(Percentile, NearestRank) {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(i);
  EXPECT_EQ(Percentile(v, 50), 50);
  EXPECT_EQ(Percentile(v, 90), 90);
  EXPECT_EQ(Percentile(v, 99), 99);
  EXPECT_EQ(Percentile(v, 100), 100);
  EXPECT_EQ(Percentile({7}, 99), 7);
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Percentile({1, 2, 3}, 50), 2);
}

TEST(Formats, ParseAndName) {
  EXPECT_EQ(*ParseFormat("eqben-pairs"), v1::EQBEN_PAIRS);
  EXPECT_EQ(*ParseFormat("EQBEN_LEADERBOARD"), v1::EQBEN_LEADERBOARD);
  EXPECT_EQ(FormatName(v1::EQBEN_VIDEO), "eqben-video");
  EXPECT_FALSE(ParseFormat("").ok());
  EXPECT_FALSE(ParseFormat("format-unspecified").ok());
  EXPECT_EQ(*ParseJobState("Running"), v1::RUNNING);
  EXPECT_FALSE(ParseJobState("state_unspecified").ok());
}

}  // namespace
}  // namespace eqsim::cli
