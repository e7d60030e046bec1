// eqsim models | embed | score
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cli/commands.h"
#include "client/cli/common.h"
#include "client/image_encoding.h"
#include "model/image/npy.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::vector<std::string>, text, {},
          "A text item; repeatable, taken verbatim (commas allowed), in command-line order");
ABSL_FLAG(std::vector<std::string>, image, {},
          "An image file (PNG, JPEG, BMP, WebP, ...); repeatable, in command-line order");
ABSL_FLAG(std::string, texts_file, "", "A file with one text item per line (appended)");
ABSL_FLAG(std::string, images_file, "", "A file with one image path per line (appended)");
ABSL_FLAG(bool, unnormalized, false, "Return raw embeddings instead of L2-normalised ones");
ABSL_FLAG(std::string, output, "",
          "embed: write the embeddings as float32 [n, dim] .npy (or .json) to this file; "
          "eval scores: where to write the score file");
ABSL_FLAG(bool, pairwise, false, "Score image i with text i instead of every pair");
ABSL_FLAG(bool, softmax, false, "Also print the softmax over the texts of each image");
ABSL_FLAG(int32_t, max_items_per_request, 64,
          "Items per request; longer inputs are split and reassembled in order");
ABSL_FLAG(int32_t, concurrency, 4,
          "Requests in flight (embed / score / eval-local: chunks of one call; loadtest: "
          "concurrent workers)");
ABSL_FLAG(int32_t, show_values, 8, "embed: how many values of each embedding to print");

namespace eqsim::cli {
namespace {

absl::StatusOr<std::vector<std::string>> ReadLines(const std::string& path, const char* what) {
  auto data = ReadBinaryFile(path, int64_t{1} << 30);
  if (!data.ok()) {
    return absl::Status(data.status().code(), absl::StrCat(what, " ", data.status().message()));
  }
  std::vector<std::string> lines;
  for (absl::string_view l : absl::StrSplit(*data, '\n')) {
    l = absl::StripSuffix(l, "\r");
    if (!absl::StripAsciiWhitespace(l).empty()) lines.emplace_back(l);
  }
  return lines;
}

absl::StatusOr<std::unique_ptr<Client>> ClientForItems() {
  auto o = ClientOptionsFromFlags();
  if (!o.ok()) return o.status();
  o->max_items_per_request = absl::GetFlag(FLAGS_max_items_per_request);
  o->max_concurrency = absl::GetFlag(FLAGS_concurrency);
  return Client::Create(*std::move(o));
}

// ---- models ----

int RunModels(const ParsedArgs& args) {
  if (!args.positional.empty()) {
    return Fail("models", absl::InvalidArgumentError("takes no arguments"), kExitUsage);
  }
  auto client = MakeClient();
  if (!client.ok()) return Fail("models", client.status(), kExitUsage);
  auto resp = (*client)->ListModels();
  if (!resp.ok()) return Fail("models", resp.status(), kExitRpcError);
  if (JsonOutput()) {
    std::printf("%s\n", ToJson(*resp).c_str());
    return kExitOk;
  }
  // Columns as wide as their widest cell; numbers right-aligned.
  std::vector<std::vector<std::string>> rows = {
      {"MODEL", "VERSION", "STATE", "DIM", "BACKEND", "DEVICE", "TOKENIZER", "IMAGE", "REASON"}};
  for (const auto& m : resp->models()) {
    rows.push_back({m.name() + (m.name() == resp->default_model() ? "*" : ""),
                    std::to_string(m.version()), v1::ModelStatus::State_Name(m.state()),
                    std::to_string(m.dim()), m.backend(), m.device(), m.tokenizer(),
                    std::to_string(m.image_size()), m.reason()});
  }
  const std::vector<bool> right = {false, true, false, true, false, false, false, true, false};
  std::vector<size_t> width(right.size(), 0);
  for (const auto& r : rows) {
    for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) {
      const std::string pad(width[c] - r[c].size(), ' ');
      const bool last = c + 1 == r.size();
      line += right[c] ? pad + r[c] : (last ? r[c] : r[c] + pad);
      if (!last) line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
  if (!resp->default_model().empty())
    std::printf("(* default model: %s)\n", resp->default_model().c_str());
  return kExitOk;
}

// ---- embed ----

struct NamedInput {
  Input input;
  std::string source;  // the path, or the text itself
};

absl::StatusOr<std::vector<NamedInput>> CollectItems(const ParsedArgs& args, bool with_texts,
                                                     bool with_images) {
  std::vector<NamedInput> items;
  for (const auto& [name, value] : args.ordered) {
    if (name == "text" && with_texts) {
      items.push_back({Input::Text(value), value});
    } else if (name == "image" && with_images) {
      for (absl::string_view p : absl::StrSplit(value, ',', absl::SkipEmpty())) {
        auto in = Input::ImageFile(std::string(p));
        if (!in.ok()) return in.status();
        items.push_back({*std::move(in), std::string(p)});
      }
    }
  }
  if (with_images && !absl::GetFlag(FLAGS_images_file).empty()) {
    auto lines = ReadLines(absl::GetFlag(FLAGS_images_file), "--images-file");
    if (!lines.ok()) return lines.status();
    for (const std::string& p : *lines) {
      auto in = Input::ImageFile(p);
      if (!in.ok()) return in.status();
      items.push_back({*std::move(in), p});
    }
  }
  if (with_texts && !absl::GetFlag(FLAGS_texts_file).empty()) {
    auto lines = ReadLines(absl::GetFlag(FLAGS_texts_file), "--texts-file");
    if (!lines.ok()) return lines.status();
    for (const std::string& t : *lines) items.push_back({Input::Text(t), t});
  }
  return items;
}

int RunEmbed(const ParsedArgs& args) {
  const std::string cmd = "embed";
  if (!args.positional.empty()) {
    return Fail(cmd, absl::InvalidArgumentError(absl::StrCat(
                         "unexpected argument '", args.positional[0],
                         "'; give items with --text / --image / --texts-file / --images-file")),
                kExitUsage);
  }
  auto items = CollectItems(args, true, true);
  if (!items.ok()) return Fail(cmd, items.status(), kExitUsage);
  if (items->empty()) {
    return Fail(cmd, absl::InvalidArgumentError(
                         "nothing to embed: give --text, --image, --texts-file or --images-file"),
                kExitUsage);
  }
  auto client = ClientForItems();
  if (!client.ok()) return Fail(cmd, client.status(), kExitUsage);
  std::vector<Input> inputs;
  for (const auto& n : *items) inputs.push_back(n.input);
  EmbedOptions eo;
  eo.model = ModelFromFlags();
  eo.unnormalized = absl::GetFlag(FLAGS_unnormalized);
  auto emb = (*client)->Embed(inputs, eo);
  if (!emb.ok()) return Fail(cmd, emb.status(), kExitRpcError);

  const std::string output = absl::GetFlag(FLAGS_output);
  nlohmann::json j;
  auto as_json = [&] {
    j["model"] = emb->model_name;
    j["version"] = emb->model_version;
    j["dim"] = emb->dim;
    j["embeddings"] = nlohmann::json::array();
    for (int64_t i = 0; i < emb->rows; ++i) {
      const auto& n = (*items)[i];
      j["embeddings"].push_back(
          {{"kind", n.input.kind == Input::Kind::kImage ? "image" : "text"},
           {"source", n.source},
           {"values", std::vector<float>(emb->row(i), emb->row(i) + emb->dim)}});
    }
    return j;
  };
  if (!output.empty()) {
    if (absl::EndsWith(output, ".json")) {
      std::ofstream out(output);
      out << as_json().dump() << "\n";
      if (!out) return Fail(cmd, absl::PermissionDeniedError("cannot write " + output), kExitUsage);
    } else {
      auto npy = WriteNpyFloat32({emb->rows, emb->dim}, emb->values);
      absl::Status s = npy.ok() ? WriteNpyFile(output, *npy) : npy.status();
      if (!s.ok()) return Fail(cmd, s, kExitUsage);
    }
  }
  if (JsonOutput()) {
    std::printf("%s\n", as_json().dump().c_str());
    return kExitOk;
  }
  std::printf("model %s v%lld, dim %d, %lld items%s\n", emb->model_name.c_str(),
              static_cast<long long>(emb->model_version), emb->dim,
              static_cast<long long>(emb->rows),
              output.empty() ? "" : absl::StrCat(", written to ", output).c_str());
  const int show = std::max(0, std::min(absl::GetFlag(FLAGS_show_values), emb->dim));
  for (int64_t i = 0; i < emb->rows; ++i) {
    const auto& n = (*items)[i];
    std::string values;
    for (int k = 0; k < show; ++k) absl::StrAppendFormat(&values, "%s%.4f", k ? " " : "", emb->row(i)[k]);
    std::string src = n.source.size() > 40 ? n.source.substr(0, 37) + "..." : n.source;
    std::printf("%4lld %-5s %-40s [%s%s]\n", static_cast<long long>(i),
                n.input.kind == Input::Kind::kImage ? "image" : "text", src.c_str(),
                values.c_str(), show < emb->dim ? " ..." : "");
  }
  return kExitOk;
}

// ---- score ----

int RunScore(const ParsedArgs& args) {
  const std::string cmd = "score";
  if (!args.positional.empty()) {
    return Fail(cmd, absl::InvalidArgumentError(absl::StrCat("unexpected argument '",
                                                             args.positional[0], "'")),
                kExitUsage);
  }
  auto image_items = CollectItems(args, false, true);
  if (!image_items.ok()) return Fail(cmd, image_items.status(), kExitUsage);
  auto text_items = CollectItems(args, true, false);
  if (!text_items.ok()) return Fail(cmd, text_items.status(), kExitUsage);
  if (image_items->empty() || text_items->empty()) {
    return Fail(cmd, absl::InvalidArgumentError(
                         "need at least one image (--image/--images-file) and one text "
                         "(--text/--texts-file)"),
                kExitUsage);
  }
  std::vector<std::string> images, texts;
  for (auto& n : *image_items) images.push_back(n.input.data);
  for (auto& n : *text_items) texts.push_back(n.input.data);
  ScoreOptions so;
  so.model = ModelFromFlags();
  so.pairwise = absl::GetFlag(FLAGS_pairwise);
  so.softmax = absl::GetFlag(FLAGS_softmax);
  if (so.pairwise && images.size() != texts.size()) {
    return Fail(cmd, absl::InvalidArgumentError(absl::StrCat(
                         "--pairwise needs as many images (", images.size(), ") as texts (",
                         texts.size(), ")")),
                kExitUsage);
  }
  if (so.pairwise && so.softmax) {
    return Fail(cmd, absl::InvalidArgumentError("--softmax applies to matrix mode only"),
                kExitUsage);
  }
  auto client = ClientForItems();
  if (!client.ok()) return Fail(cmd, client.status(), kExitUsage);
  auto s = (*client)->Score(images, texts, so);
  if (!s.ok()) return Fail(cmd, s.status(), kExitRpcError);
  if (JsonOutput()) {
    nlohmann::json j;
    j["model"] = s->model_name;
    j["version"] = s->model_version;
    j["mode"] = so.pairwise ? "pairwise" : "matrix";
    j["rows"] = s->rows;
    j["cols"] = s->cols;
    j["logit_scale"] = s->logit_scale;
    j["images"] = nlohmann::json::array();
    for (auto& n : *image_items) j["images"].push_back(n.source);
    j["texts"] = texts;
    j["cosine"] = s->cosine;
    j["logits"] = s->logits;
    if (!s->probs.empty()) j["probs"] = s->probs;
    std::printf("%s\n", j.dump().c_str());
    return kExitOk;
  }
  std::printf("model %s v%lld, logit scale %.4f\n", s->model_name.c_str(),
              static_cast<long long>(s->model_version), s->logit_scale);
  if (so.pairwise) {
    std::printf("%4s %9s %9s  %-30s %s\n", "#", "cosine", "logit", "image", "text");
    for (int64_t i = 0; i < s->rows; ++i)
      std::printf("%4lld %9.4f %9.4f  %-30s %s\n", static_cast<long long>(i), s->cosine[i],
                  s->logits[i], (*image_items)[i].source.c_str(), texts[i].c_str());
    return kExitOk;
  }
  for (size_t t = 0; t < texts.size(); ++t) std::printf("  t%zu = %s\n", t, texts[t].c_str());
  std::printf("%-30s", "cosine");
  for (size_t t = 0; t < texts.size(); ++t) std::printf(" %8s", absl::StrCat("t", t).c_str());
  std::printf("\n");
  for (int64_t i = 0; i < s->rows; ++i) {
    std::string src = (*image_items)[i].source;
    if (src.size() > 30) src = "..." + src.substr(src.size() - 27);
    std::printf("%-30s", src.c_str());
    for (int64_t j = 0; j < s->cols; ++j) std::printf(" %8.4f", s->cosine[i * s->cols + j]);
    std::printf("\n");
    if (!s->probs.empty()) {
      std::printf("%-30s", "  softmax");
      for (int64_t j = 0; j < s->cols; ++j) std::printf(" %8.4f", s->probs[i * s->cols + j]);
      std::printf("\n");
    }
  }
  return kExitOk;
}

}  // namespace

std::vector<Command> BasicCommands() {
  const std::vector<std::string> item_flags = {"text",   "image",   "texts_file",
                                               "images_file", "model", "model_version",
                                               "max_items_per_request", "concurrency"};
  std::vector<std::string> embed_flags = item_flags;
  for (const char* f : {"unnormalized", "output", "show_values"}) embed_flags.push_back(f);
  std::vector<std::string> score_flags = item_flags;
  for (const char* f : {"pairwise", "softmax"}) score_flags.push_back(f);
  return {
      {"models", "", "List the served models, their versions and states", "", {}, RunModels},
      {"embed", "", "Embed images and texts (any number: split into requests, reassembled in order)",
       "Items are embedded in command-line order, then --images-file, then --texts-file.\n"
       "Example: eqsim embed --image bag.png --text 'a red bag' --output emb.npy",
       embed_flags, RunEmbed},
      {"score", "", "Similarity of images against texts (matrix, or pairwise)",
       "Example: eqsim score --image a.png --image b.png --text 'a red bag' --text 'a blue "
       "shoe' --softmax",
       score_flags, RunScore},
  };
}

}  // namespace eqsim::cli
