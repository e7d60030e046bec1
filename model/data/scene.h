// Synthetic multi-item scenes built from real Fashion-MNIST images: the shared ground of the
// trainer's built-in data (train images) and the minimal-change benchmark (test images).
//
// A scene holds 1..4 items laid out in a 2 x 2 grid in reading order: slot 0 top-left,
// slot 1 top-right, slot 2 bottom-left, slot 3 bottom-right; n items fill slots 0..n-1.
// Each item is one Fashion-MNIST image tinted with a colour. Rendering is deterministic:
// the same scene always gives the same pixels, and an item's pixels depend only on the item
// and its slot, so two scenes differ exactly in the slots whose items differ.
//
// Captions list the items in reading order and merge runs of identical (class, colour)
// items with a count word: "two red bags and a blue sneaker". Order, colour and count
// therefore all matter; a bag-of-words model cannot tell a swapped scene apart.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/data/fashion_mnist.h"
#include "opencv2/core.hpp"

namespace eqsim {

inline constexpr int kSceneMaxItems = 4;
inline constexpr int kSceneCanvas = 64;  // pixels per side; each slot is 32 x 32

// The palette: names and RGB values ("red", "green", "blue", "yellow", "purple", "orange",
// "white", "cyan").
const std::vector<std::string>& SceneColorNames();
const std::vector<cv::Vec3b>& SceneColorRgb();

struct SceneItem {
  int label = 0;            // Fashion-MNIST class 0..9
  int color = 0;            // index into SceneColorNames()
  int64_t image_index = 0;  // which image of the split
  bool operator==(const SceneItem& o) const {
    return label == o.label && color == o.color && image_index == o.image_index;
  }
};

struct Scene {
  std::vector<SceneItem> items;  // reading order, 1..kSceneMaxItems
};

// The caption; `style` picks one of the phrasing templates (0 = the plain list, which the
// benchmark uses). Templates only add fixed words around the list.
std::string SceneCaption(const Scene& scene, int style = 0);
int SceneCaptionStyles();

// RGB CV_8UC3, kSceneCanvas x kSceneCanvas, black background.
cv::Mat RenderScene(const Scene& scene, const FashionMnist& data);

// A random scene of `min_items..max_items` items drawn from `data`.
Scene RandomScene(const FashionMnist& data, int min_items, int max_items, std::mt19937_64& rng);

// Minimal changes. Each returns false (scene untouched) when the change is impossible for
// this scene or would leave the caption unchanged; otherwise `out` differs from `in` only as
// named, and SceneCaption(out) != SceneCaption(in).
// Location: two items of different (class, colour) swap slots.
bool SwapTwoItems(const Scene& in, std::mt19937_64& rng, Scene* out);
// Attribute: one item gets another colour.
bool RecolorOneItem(const Scene& in, std::mt19937_64& rng, Scene* out);
// Counting: one more copy of an item next to it (same class, colour, a new image of that
// class), or one copy fewer of a run of at least two.
bool ChangeCount(const Scene& in, const FashionMnist& data, std::mt19937_64& rng, Scene* out);
// Object: one item replaced by an item of another class (same colour, slot).
bool ReplaceOneItem(const Scene& in, const FashionMnist& data, std::mt19937_64& rng, Scene* out);

}  // namespace eqsim
