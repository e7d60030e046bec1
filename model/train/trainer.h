// The trainer behind eqsim-train (torch-free header; LibTorch stays in model/train/*.cc).
//
// One call of Train() = one training run: open the data source, build (or resume) a native
// dual encoder, run `steps` AdamW steps of ContrastiveLoss (+ the EqSim regulariser when any
// EqSim side is on) with a producer thread preparing batches ahead of the compute, evaluate
// periodically, write checkpoints, and finally publish a new model version atomically.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "eqsim/config/model_config.pb.h"
#include "model/core/eqsim_options.h"
#include "model/core/tensor.h"
#include "model/train/data_source.h"

namespace eqsim {

struct TrainOptions {
  DataSourceOptions data;  // data.seed is set from `seed`

  // Model. `config_path` (a config.pbtxt) wins over the architecture fields below.
  // Defaults are sized for a 2-core CPU: ~200k parameters, 400 steps of batch 128 train in
  // about 1 minute on an idle 2-core machine (3 minutes shared) to ~93% held-out R@1.
  std::string config_path;
  int embed_dim = 64;
  int image_width = 16;
  int image_stages = 3;
  int image_blocks = 1;
  int image_pool_grid = 2;
  int image_stem_stride = 2;
  int image_size = 64;
  int text_width = 64;
  int text_layers = 2;
  int text_heads = 2;
  int context_length = 16;

  // Optimisation.
  int64_t steps = 400;
  int batch_size = 128;
  double lr = 2e-3;
  double weight_decay = 0.05;  // not applied to biases, norms, embeddings' positions, scale
  int64_t warmup_steps = 40;
  std::string schedule = "cosine";  // cosine | linear | constant
  double grad_clip = 1.0;           // max global grad norm; 0 = off
  uint64_t seed = 0;
  int threads = 0;      // at::set_num_threads; 0 = number of CPUs
  // OpenBLAS's own pthread pool (openblas_set_num_threads) when OpenBLAS is loaded; 0 = leave
  // it. Default 1: LibTorch already parallelises over `threads`; nested BLAS threads only
  // oversubscribe the cores (measured: ~25% more CPU per step on 2 cores).
  int blas_threads = 1;
  int queue_depth = 4;  // ready batches the producer may hold
  EqSimOptions eqsim;

  // Evaluation.
  std::string eval_benchmark;   // annotation file (model/bench readers)
  std::string eval_format = "winoground";
  std::string eval_image_root;
  int64_t eval_limit = 0;       // entries per subset (0 = all)
  int64_t eval_every = 0;       // 0 = only at the end
  int heldout_scenes = 100;     // built-in held-out retrieval check (0 = off)
  uint64_t heldout_seed = 20230314;

  // Checkpoints.
  std::string checkpoint_dir;
  int64_t checkpoint_every = 0;  // 0 = only at the end (when checkpoint_dir is set)
  bool resume = false;           // continue from the newest checkpoint in checkpoint_dir
  int keep_checkpoints = 2;
  int64_t stop_after = 0;        // stop (as if interrupted) after this many steps; 0 = off

  // Output.
  std::string repository;
  std::string model_name;
  std::string description;
  std::string metrics_log;  // JSON Lines
  int64_t log_every = 10;
  bool progress = true;     // progress bar on stderr

  // Recorded in the model card.
  std::string command_line;
  std::map<std::string, std::string> flags;
};

struct RetrievalMetrics {
  int n = 0;
  double i2t_r1 = 0, i2t_r5 = 0, t2i_r1 = 0;  // fractions in [0, 1]
};

// Recall@k among n images and their n captions (row i of each is a matched pair); embeddings
// need not be normalised. Ties count against the right answer.
RetrievalMetrics ComputeRetrieval(const Matrix& image_emb, const Matrix& text_emb);

struct TrainResult {
  int64_t steps_done = 0;      // the step counter at the end (includes resumed steps)
  int64_t steps_this_run = 0;
  int64_t resumed_from = 0;
  bool stopped_early = false;  // stop_after reached
  double seconds = 0;          // wall time of this run's steps
  double steps_per_s = 0;
  double samples_per_s = 0;
  double data_wait_s = 0;      // time the trainer waited for batches
  // Means over the last log window.
  double loss = 0, itc = 0, eqsim_text = 0, eqsim_image = 0, eqsim_group = 0, eqsim_v1 = 0,
         eqsim_pos_reg = 0;
  double first_loss = 0;       // mean of the first log window of this run
  double logit_scale = 0;
  RetrievalMetrics heldout;
  std::string benchmark_json;  // evaluator result of --eval-benchmark at the end, if any
  int64_t parameters = 0;
  int vocab_size = 0;
  int64_t bad_samples = 0;
  std::string params_fingerprint;  // hex FNV-1a of every parameter's bytes, in name order
  std::string version_dir;         // the published version, when repository is set
  int64_t version = 0;
  std::string checkpoint;          // the last checkpoint written
  std::string ToJson() const;
};

absl::StatusOr<TrainResult> Train(const TrainOptions& options);

// The model config a run with these options trains (from config_path or the architecture
// fields; tokenizer WORD with vocab.txt; WithDefaults applied; validated).
absl::StatusOr<config::ModelConfig> ModelConfigFromOptions(const TrainOptions& options);

// Every field of the options as JSON (for the model card and checkpoints).
std::string TrainOptionsToJson(const TrainOptions& options);

}  // namespace eqsim
