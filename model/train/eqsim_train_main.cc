// eqsim-train: trains a native dual encoder (contrastive, optionally + EqSim) and publishes it
// as a new version in a model repository.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/core/command_line.h"
#include "model/train/trainer.h"

// Data.
ABSL_FLAG(std::string, data, "fashion-mnist",
          "Training data: fashion-mnist (built-in scenes of 1-4 Fashion-MNIST TRAIN items), "
          "manifest:<file.jsonl> ({\"image\": path, \"caption\": text} per line) or "
          "karpathy:<dataset_*.json> (images[].filename/split/sentences[].raw)");
ABSL_FLAG(std::string, image_root, "",
          "Folder that relative image paths are resolved against (default: the annotation "
          "file's folder)");
ABSL_FLAG(std::string, split, "train", "karpathy: comma-separated splits to train on");
ABSL_FLAG(int32_t, max_bad_samples, 100,
          "Unreadable images / empty or non-UTF-8 captions are skipped and reported; more "
          "than this many is an error");
ABSL_FLAG(double, twin_prob, 0.0,
          "fashion-mnist: probability that a scene is followed in its batch by a minimally "
          "changed twin (swap / recolour / count / replace)");
ABSL_FLAG(int32_t, min_items, 1, "fashion-mnist: fewest items per scene");
ABSL_FLAG(int32_t, max_items, 4, "fashion-mnist: most items per scene (<= 4)");
ABSL_FLAG(bool, caption_styles, true,
          "fashion-mnist: vary the caption template (false: always the plain list)");
ABSL_FLAG(std::string, fashion_mnist_dir, "/usr/share/datasets/fashion-mnist",
          "Folder with the Fashion-MNIST IDX .gz files");
ABSL_FLAG(int32_t, queue_depth, 4, "Batches the data producer thread prepares ahead");

// Model.
ABSL_FLAG(std::string, config, "",
          "A config.pbtxt (backend NATIVE, tokenizer WORD) to train instead of the "
          "architecture flags below");
ABSL_FLAG(int32_t, embed_dim, 64, "Joint embedding size");
ABSL_FLAG(int32_t, image_width, 16, "Channels of the first ResNet stage (doubled per stage)");
ABSL_FLAG(int32_t, image_stages, 3, "ResNet stages");
ABSL_FLAG(int32_t, image_blocks, 1, "Residual blocks per stage");
ABSL_FLAG(int32_t, image_pool_grid, 2, "Image pooling grid (N x N); 1 = global average pool");
ABSL_FLAG(int32_t, image_stem_stride, 2, "Stride of the image stem convolution (1 or 2)");
ABSL_FLAG(int32_t, image_size, 64, "Input image side");
ABSL_FLAG(int32_t, text_width, 64, "Transformer width");
ABSL_FLAG(int32_t, text_layers, 2, "Transformer layers");
ABSL_FLAG(int32_t, text_heads, 2, "Attention heads");
ABSL_FLAG(int32_t, context_length, 16, "Token context length");

// Optimisation.
ABSL_FLAG(int64_t, steps, 400, "Training steps");
ABSL_FLAG(int32_t, batch_size, 128, "Pairs per batch");
ABSL_FLAG(double, lr, 2e-3, "Peak learning rate (AdamW)");
ABSL_FLAG(double, weight_decay, 0.05, "AdamW weight decay (not on biases, norms, positions)");
ABSL_FLAG(int64_t, warmup_steps, 40, "Linear warm-up steps");
ABSL_FLAG(std::string, schedule, "cosine", "Learning-rate decay after warm-up: cosine|linear|constant");
ABSL_FLAG(double, grad_clip, 1.0, "Clip the global gradient norm (0 = off)");
ABSL_FLAG(uint64_t, seed, 0, "Seed of initialisation, data stream and EqSim sampling");
ABSL_FLAG(int32_t, threads, 0, "LibTorch intra-op threads (0 = all CPUs)");
ABSL_FLAG(int32_t, blas_threads, 1,
          "OpenBLAS's own thread pool (0 = leave its default); 1 avoids oversubscribing the "
          "cores LibTorch already uses");

// EqSim.
ABSL_FLAG(bool, eqsim, false,
          "Enable the released EqSim recipe (text+image sides, v1, weight 0.5, margin 0.1, "
          "sample_num 4, pre-softmax); the --eqsim-* flags below override single knobs");
ABSL_FLAG(std::string, eqsim_text_side, "", "EqSim v2 text-side term: true|false (default: recipe)");
ABSL_FLAG(std::string, eqsim_image_side, "", "EqSim v2 image-side term: true|false");
ABSL_FLAG(std::string, eqsim_group_side, "", "EqSim v2 group-side term: true|false");
ABSL_FLAG(std::string, eqsim_v1, "", "EqSim v1 term on distant pairs: true|false");
ABSL_FLAG(std::string, eqsim_weight, "", "EqSim weight w");
ABSL_FLAG(std::string, eqsim_margin, "", "EqSim margin m (subtracted after the mean)");
ABSL_FLAG(std::string, eqsim_margin_v1, "", "EqSim v1 margin");
ABSL_FLAG(std::string, eqsim_prop, "", "EqSim v1 scale divisor");
ABSL_FLAG(std::string, eqsim_sample_num, "", "Hard partners per direction (-1 = all pairs)");
ABSL_FLAG(std::string, eqsim_pre_softmax, "", "Row softmax of S before the EqSim terms: true|false");
ABSL_FLAG(std::string, eqsim_norm, "", "Divide differences by |s_aa|, |s_jj|: true|false");
ABSL_FLAG(std::string, eqsim_pos_reg, "", "Penalise matched below mismatched: true|false");

// Evaluation.
ABSL_FLAG(std::string, eval_benchmark, "", "Benchmark annotation file evaluated periodically");
ABSL_FLAG(std::string, eval_format, "winoground",
          "Its format: winoground, eqben-pairs, eqben-video, eqben-ag, valse");
ABSL_FLAG(std::string, eval_image_root, "", "Image root of the benchmark (default: its folder)");
ABSL_FLAG(int64_t, eval_limit, 0, "Benchmark entries per subset (0 = all)");
ABSL_FLAG(int64_t, eval_every, 0, "Evaluate every N steps (0 = only at the end)");
ABSL_FLAG(int32_t, heldout_scenes, 100,
          "Built-in check: image<->text retrieval among this many Fashion-MNIST TEST scenes "
          "(0 = off)");

// Checkpoints.
ABSL_FLAG(std::string, checkpoint_dir, "", "Folder for checkpoints (step-<N>/)");
ABSL_FLAG(int64_t, checkpoint_every, 0, "Checkpoint every N steps (0 = only at the end)");
ABSL_FLAG(bool, resume, false, "Continue from the newest checkpoint in --checkpoint-dir");
ABSL_FLAG(int32_t, keep_checkpoints, 2, "Checkpoints kept (older ones are deleted)");
ABSL_FLAG(int64_t, stop_after, 0,
          "Stop after this step as if interrupted (checkpoint, no version); 0 = off");

// Output.
ABSL_FLAG(std::string, repository, "", "Model repository to publish the trained version into");
ABSL_FLAG(std::string, model_name, "", "Model name in the repository");
ABSL_FLAG(std::string, description, "", "config.pbtxt description (new models only)");
ABSL_FLAG(std::string, metrics_log, "", "Append metrics as JSON Lines to this file");
ABSL_FLAG(int64_t, log_every, 10, "Steps per progress / metrics line");
ABSL_FLAG(bool, progress, true, "Progress on stderr");
ABSL_FLAG(bool, json, false, "Print the final summary as JSON on stdout");

namespace {

bool ParseBoolText(const std::string& s, bool* out) {
  if (s == "true" || s == "1" || s == "yes" || s == "on") { *out = true; return true; }
  if (s == "false" || s == "0" || s == "no" || s == "off") { *out = false; return true; }
  return false;
}

// Applies an --eqsim-* override when given. Returns false (with a message) on a bad value.
template <typename T>
bool Override(const absl::Flag<std::string>& flag, const char* name, T* field) {
  const std::string v = absl::GetFlag(flag);
  if (v.empty()) return true;
  bool ok = false;
  if constexpr (std::is_same_v<T, bool>) {
    ok = ParseBoolText(v, field);
  } else if constexpr (std::is_same_v<T, float>) {
    char* end = nullptr;
    *field = std::strtof(v.c_str(), &end);
    ok = end != v.c_str() && *end == '\0' && std::isfinite(*field);
  } else {
    char* end = nullptr;
    *field = static_cast<T>(std::strtol(v.c_str(), &end, 10));
    ok = end != v.c_str() && *end == '\0';
  }
  if (!ok) std::cerr << "eqsim-train: --" << name << "=" << v << ": invalid value\n";
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> rest = eqsim::ParseProgramFlags(argc, argv,
      "Trains a native image-text dual encoder with the contrastive loss, optionally plus the "
      "EqSim regulariser, and publishes it into a model repository.\n"
      "  eqsim-train --data fashion-mnist --repository models --model-name fm\n"
      "  eqsim-train --data fashion-mnist --eqsim --twin-prob 0.5 --repository models "
      "--model-name fm-eqsim\n"
      "  eqsim-train --data manifest:pairs.jsonl --steps 5000 --checkpoint-dir ckpt "
      "--checkpoint-every 500 --resume",
      "eqsim_train_main");
  if (rest.size() > 1) {
    std::cerr << "eqsim-train: unexpected argument '" << rest[1] << "' (see --help)\n";
    return 2;
  }

  eqsim::TrainOptions o;
  o.data.spec = absl::GetFlag(FLAGS_data);
  o.data.image_root = absl::GetFlag(FLAGS_image_root);
  o.data.split = absl::GetFlag(FLAGS_split);
  o.data.max_bad_samples = absl::GetFlag(FLAGS_max_bad_samples);
  o.data.twin_prob = absl::GetFlag(FLAGS_twin_prob);
  o.data.min_items = absl::GetFlag(FLAGS_min_items);
  o.data.max_items = absl::GetFlag(FLAGS_max_items);
  o.data.random_caption_style = absl::GetFlag(FLAGS_caption_styles);
  o.data.fashion_mnist_dir = absl::GetFlag(FLAGS_fashion_mnist_dir);
  o.queue_depth = absl::GetFlag(FLAGS_queue_depth);
  o.config_path = absl::GetFlag(FLAGS_config);
  o.embed_dim = absl::GetFlag(FLAGS_embed_dim);
  o.image_width = absl::GetFlag(FLAGS_image_width);
  o.image_stages = absl::GetFlag(FLAGS_image_stages);
  o.image_blocks = absl::GetFlag(FLAGS_image_blocks);
  o.image_pool_grid = absl::GetFlag(FLAGS_image_pool_grid);
  o.image_stem_stride = absl::GetFlag(FLAGS_image_stem_stride);
  o.image_size = absl::GetFlag(FLAGS_image_size);
  o.text_width = absl::GetFlag(FLAGS_text_width);
  o.text_layers = absl::GetFlag(FLAGS_text_layers);
  o.text_heads = absl::GetFlag(FLAGS_text_heads);
  o.context_length = absl::GetFlag(FLAGS_context_length);
  o.steps = absl::GetFlag(FLAGS_steps);
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.lr = absl::GetFlag(FLAGS_lr);
  o.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  o.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  o.schedule = absl::GetFlag(FLAGS_schedule);
  o.grad_clip = absl::GetFlag(FLAGS_grad_clip);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.blas_threads = absl::GetFlag(FLAGS_blas_threads);
  if (absl::GetFlag(FLAGS_eqsim)) o.eqsim = eqsim::EqSimOptions::Released();
  bool ok = true;
  ok &= Override(FLAGS_eqsim_text_side, "eqsim-text-side", &o.eqsim.text_side);
  ok &= Override(FLAGS_eqsim_image_side, "eqsim-image-side", &o.eqsim.image_side);
  ok &= Override(FLAGS_eqsim_group_side, "eqsim-group-side", &o.eqsim.group_side);
  ok &= Override(FLAGS_eqsim_v1, "eqsim-v1", &o.eqsim.v1);
  ok &= Override(FLAGS_eqsim_weight, "eqsim-weight", &o.eqsim.weight);
  ok &= Override(FLAGS_eqsim_margin, "eqsim-margin", &o.eqsim.margin);
  ok &= Override(FLAGS_eqsim_margin_v1, "eqsim-margin-v1", &o.eqsim.margin_v1);
  ok &= Override(FLAGS_eqsim_prop, "eqsim-prop", &o.eqsim.prop);
  ok &= Override(FLAGS_eqsim_sample_num, "eqsim-sample-num", &o.eqsim.sample_num);
  ok &= Override(FLAGS_eqsim_pre_softmax, "eqsim-pre-softmax", &o.eqsim.pre_softmax);
  ok &= Override(FLAGS_eqsim_norm, "eqsim-norm", &o.eqsim.norm);
  ok &= Override(FLAGS_eqsim_pos_reg, "eqsim-pos-reg", &o.eqsim.pos_reg);
  if (!ok) return 2;
  o.eval_benchmark = absl::GetFlag(FLAGS_eval_benchmark);
  o.eval_format = absl::GetFlag(FLAGS_eval_format);
  o.eval_image_root = absl::GetFlag(FLAGS_eval_image_root);
  o.eval_limit = absl::GetFlag(FLAGS_eval_limit);
  o.eval_every = absl::GetFlag(FLAGS_eval_every);
  o.heldout_scenes = absl::GetFlag(FLAGS_heldout_scenes);
  o.checkpoint_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  o.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
  o.resume = absl::GetFlag(FLAGS_resume);
  o.keep_checkpoints = absl::GetFlag(FLAGS_keep_checkpoints);
  o.stop_after = absl::GetFlag(FLAGS_stop_after);
  o.repository = absl::GetFlag(FLAGS_repository);
  o.model_name = absl::GetFlag(FLAGS_model_name);
  o.description = absl::GetFlag(FLAGS_description);
  o.metrics_log = absl::GetFlag(FLAGS_metrics_log);
  o.log_every = absl::GetFlag(FLAGS_log_every);
  o.progress = absl::GetFlag(FLAGS_progress);

  // The command line without the program's path, and every flag of this program.
  std::vector<std::string> args{"eqsim-train"};
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  o.command_line = absl::StrJoin(args, " ");
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::StrContains(flag->Filename(), "eqsim_train_main")) {
      o.flags[std::string(name)] = flag->CurrentValue();
    }
  }

  absl::StatusOr<eqsim::TrainResult> r = eqsim::Train(o);
  if (!r.ok()) {
    std::cerr << "eqsim-train: error: " << r.status().message() << "\n";
    return r.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (absl::GetFlag(FLAGS_json)) std::cout << r->ToJson() << std::endl;
  return 0;
}
