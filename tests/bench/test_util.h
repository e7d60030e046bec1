// Small helpers shared by the tests in tests/bench.
#pragma once

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "model/bench/evaluator.h"
#include "model/bench/readers.h"

namespace eqsim::testing {

// A fresh directory under $TMPDIR (or /tmp), removed at destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/eqsim_bench_XXXXXX";
    char* p = mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    if (!path_.empty() && getenv("EQSIM_KEEP_TMP") == nullptr) {
      std::string cmd = "rm -rf '" + path_ + "'";
      if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "cleanup failed: %s\n", cmd.c_str());
    }
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

inline void MakeDirs(const std::string& path) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!cur.empty()) mkdir(cur.c_str(), 0755);
    }
    if (i < path.size()) cur.push_back(path[i]);
  }
}

inline void WriteFile(const std::string& path, const std::string& data) {
  const size_t slash = path.find_last_of('/');
  if (slash != std::string::npos) MakeDirs(path.substr(0, slash));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out) << path;
  out << data;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs a shell command, returns its exit status and stdout.
inline int RunShell(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  std::string result;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) result.append(buf, n);
  const int status = pclose(p);
  if (out != nullptr) *out = result;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline constexpr char kPython[] = "/usr/bin/python3";

inline ReadOptions RootOpts(const std::string& root) {
  ReadOptions o;
  o.image_root = root;
  return o;
}

inline EvalOptions KeepScores() {
  EvalOptions o;
  o.keep_scores = true;
  return o;
}

}  // namespace eqsim::testing
