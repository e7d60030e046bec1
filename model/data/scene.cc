#include "model/data/scene.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace eqsim {
namespace {

constexpr int kSlotSide = kSceneCanvas / 2;                     // 32
constexpr int kSlotPad = (kSlotSide - kFashionMnistSide) / 2;   // 2

int UniformInt(std::mt19937_64& rng, int lo, int hi) {  // inclusive
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

// A uniformly random image index of class `label` other than `avoid` (rejection sampling:
// classes are balanced in Fashion-MNIST, so ~10 draws on average). -1 if none found.
int64_t RandomImageOfClass(const FashionMnist& data, int label, int64_t avoid,
                           std::mt19937_64& rng) {
  if (data.count <= 0) return -1;
  std::uniform_int_distribution<int64_t> pick(0, data.count - 1);
  for (int tries = 0; tries < 100000; ++tries) {
    const int64_t i = pick(rng);
    if (data.labels[static_cast<size_t>(i)] == label && i != avoid) return i;
  }
  return -1;
}

bool SameKind(const SceneItem& a, const SceneItem& b) {
  return a.label == b.label && a.color == b.color;
}

const char* CountWord(int n) {
  static const char* kWords[] = {"no", "one", "two", "three", "four", "five", "six", "seven",
                                 "eight"};
  return n >= 0 && n <= 8 ? kWords[n] : "many";
}

std::string Article(const std::string& next_word) {
  const char c = next_word.empty() ? 'x' : next_word[0];
  return (c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u') ? "an" : "a";
}

std::string ItemList(const Scene& scene) {
  const auto& colors = SceneColorNames();
  const auto& names = FashionMnistClassNames();
  const auto& plurals = FashionMnistClassPlurals();
  std::vector<std::string> parts;
  const auto& items = scene.items;
  for (size_t i = 0; i < items.size();) {
    size_t j = i + 1;
    while (j < items.size() && SameKind(items[i], items[j])) ++j;
    const int run = static_cast<int>(j - i);
    const std::string& color = colors[static_cast<size_t>(items[i].color) % colors.size()];
    const int label = items[i].label;
    if (run == 1) {
      parts.push_back(absl::StrCat(Article(color), " ", color, " ", names[label % 10]));
    } else {
      parts.push_back(absl::StrCat(CountWord(run), " ", color, " ", plurals[label % 10]));
    }
    i = j;
  }
  if (parts.empty()) return "nothing";
  if (parts.size() == 1) return parts[0];
  const std::string head =
      absl::StrJoin(std::vector<std::string>(parts.begin(), parts.end() - 1), ", ");
  return absl::StrCat(head, " and ", parts.back());
}

struct Template {
  const char* prefix;
  const char* suffix;
};
constexpr Template kTemplates[] = {
    {"", ""},
    {"a picture of ", ""},
    {"a photo of ", " on a black background"},
    {"there is ", ""},
    {"an image showing ", ""},
    {"", " from left to right and top to bottom"},
};

}  // namespace

const std::vector<std::string>& SceneColorNames() {
  static const auto* names = new std::vector<std::string>{
      "red", "green", "blue", "yellow", "purple", "orange", "white", "cyan"};
  return *names;
}

const std::vector<cv::Vec3b>& SceneColorRgb() {
  static const auto* rgb = new std::vector<cv::Vec3b>{
      {230, 30, 30},  {40, 190, 40},  {40, 90, 240},   {240, 220, 30},
      {150, 50, 210}, {250, 140, 20}, {240, 240, 240}, {30, 220, 230}};
  return *rgb;
}

std::string SceneCaption(const Scene& scene, int style) {
  const int n = SceneCaptionStyles();
  const Template& t = kTemplates[((style % n) + n) % n];
  return absl::StrCat(t.prefix, ItemList(scene), t.suffix);
}

int SceneCaptionStyles() { return static_cast<int>(sizeof(kTemplates) / sizeof(kTemplates[0])); }

cv::Mat RenderScene(const Scene& scene, const FashionMnist& data) {
  cv::Mat canvas(kSceneCanvas, kSceneCanvas, CV_8UC3, cv::Scalar(0, 0, 0));
  const auto& palette = SceneColorRgb();
  const int n = std::min<int>(static_cast<int>(scene.items.size()), kSceneMaxItems);
  for (int slot = 0; slot < n; ++slot) {
    const SceneItem& item = scene.items[static_cast<size_t>(slot)];
    if (item.image_index < 0 || item.image_index >= data.count) continue;
    const cv::Vec3b color = palette[static_cast<size_t>(item.color) % palette.size()];
    const uint8_t* src = data.image(item.image_index);
    const int y0 = (slot / 2) * kSlotSide + kSlotPad;
    const int x0 = (slot % 2) * kSlotSide + kSlotPad;
    for (int y = 0; y < kFashionMnistSide; ++y) {
      auto* row = canvas.ptr<cv::Vec3b>(y0 + y);
      for (int x = 0; x < kFashionMnistSide; ++x) {
        const int v = src[y * kFashionMnistSide + x];
        cv::Vec3b& px = row[x0 + x];
        for (int c = 0; c < 3; ++c) px[c] = static_cast<uint8_t>((v * color[c] + 127) / 255);
      }
    }
  }
  return canvas;
}

Scene RandomScene(const FashionMnist& data, int min_items, int max_items, std::mt19937_64& rng) {
  min_items = std::clamp(min_items, 1, kSceneMaxItems);
  max_items = std::clamp(max_items, min_items, kSceneMaxItems);
  Scene scene;
  if (data.count <= 0) return scene;
  const int n = UniformInt(rng, min_items, max_items);
  const int colors = static_cast<int>(SceneColorNames().size());
  std::uniform_int_distribution<int64_t> pick(0, data.count - 1);
  for (int i = 0; i < n; ++i) {
    SceneItem item;
    item.image_index = pick(rng);
    item.label = data.labels[static_cast<size_t>(item.image_index)];
    item.color = UniformInt(rng, 0, colors - 1);
    scene.items.push_back(item);
  }
  return scene;
}

bool SwapTwoItems(const Scene& in, std::mt19937_64& rng, Scene* out) {
  std::vector<std::pair<int, int>> pairs;
  const int n = static_cast<int>(in.items.size());
  for (int i = 0; i < n; ++i) {
    for (int j = i + 1; j < n; ++j) {
      if (!SameKind(in.items[i], in.items[j])) pairs.emplace_back(i, j);
    }
  }
  if (pairs.empty()) return false;
  const auto [a, b] = pairs[static_cast<size_t>(UniformInt(rng, 0, static_cast<int>(pairs.size()) - 1))];
  Scene s = in;
  std::swap(s.items[a], s.items[b]);
  *out = std::move(s);
  return true;
}

bool RecolorOneItem(const Scene& in, std::mt19937_64& rng, Scene* out) {
  const int n = static_cast<int>(in.items.size());
  const int colors = static_cast<int>(SceneColorNames().size());
  if (n == 0 || colors < 2) return false;
  Scene s = in;
  const int i = UniformInt(rng, 0, n - 1);
  // A colour other than the current one, uniformly.
  int c = UniformInt(rng, 0, colors - 2);
  if (c >= s.items[i].color) ++c;
  s.items[i].color = c;
  *out = std::move(s);
  return true;
}

// Only the last slot changes: either the last item gets one more copy right after it (a new
// image of the same class and colour), or, when the scene ends with a run of two or more
// identical items, the last copy goes. The other items keep their slots and pixels.
bool ChangeCount(const Scene& in, const FashionMnist& data, std::mt19937_64& rng, Scene* out) {
  const int n = static_cast<int>(in.items.size());
  if (n == 0) return false;
  const bool can_remove = n >= 2 && SameKind(in.items[n - 1], in.items[n - 2]);
  const bool can_add = n < kSceneMaxItems;
  if (!can_remove && !can_add) return false;
  const bool add = can_add && (!can_remove || UniformInt(rng, 0, 1) == 0);
  Scene s = in;
  if (add) {
    SceneItem copy = in.items[n - 1];
    copy.image_index = RandomImageOfClass(data, copy.label, copy.image_index, rng);
    if (copy.image_index < 0) return false;
    s.items.push_back(copy);
  } else {
    s.items.pop_back();
  }
  *out = std::move(s);
  return true;
}

bool ReplaceOneItem(const Scene& in, const FashionMnist& data, std::mt19937_64& rng, Scene* out) {
  const int n = static_cast<int>(in.items.size());
  if (n == 0) return false;
  Scene s = in;
  const int i = UniformInt(rng, 0, n - 1);
  int label = UniformInt(rng, 0, kFashionMnistClasses - 2);
  if (label >= s.items[i].label) ++label;
  const int64_t index = RandomImageOfClass(data, label, -1, rng);
  if (index < 0) return false;
  s.items[i].label = label;
  s.items[i].image_index = index;
  *out = std::move(s);
  return true;
}

}  // namespace eqsim
