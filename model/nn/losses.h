// Contrastive (InfoNCE / ITC) and EqSim losses on a score matrix, exactly as
// ../shared/docs/eqsim-spec.md section 2 (the released code wins where it differs from the
// paper). torch header: only model/nn and model/train include it.
//
// S is [B, B], rows = images, columns = captions, S[x][y] = exp(logit_scale) * cos(I_x, T_y),
// matched pairs on the diagonal.
#pragma once

#include <torch/torch.h>

namespace eqsim {

struct EqSimOptions {
  bool text_side = false;   // v2 text-side term
  bool image_side = false;  // v2 image-side term
  bool group_side = false;  // v2 group-side term
  bool v1 = false;          // v1 term on the distant pairs (mask M)
  float weight = 1.0f;      // w (ignored by the v2 terms when `norm`, like the release)
  float margin = 0.0f;      // m, subtracted after the mean
  float margin_v1 = 0.0f;   // m_v1
  float prop = 1.0f;        // v1 is scaled by weight / prop
  int sample_num = -1;      // hard partners per direction; -1 = every other pair of the batch
  bool pre_softmax = false; // row softmax of S over captions before the EqSim terms
  bool norm = false;        // divide differences by |s_aa| and |s_jj|
  bool pos_reg = false;     // add relu(-(matched - mismatched)) penalties

  // The released recipe (spec 2c): text+image sides, v1 on, w 0.5, m 0.1, m_v1 0, prop 1,
  // sample_num 4, pre-softmax on.
  static EqSimOptions Released();
  bool any() const { return text_side || image_side || group_side || v1; }
};

// Symmetric InfoNCE: (CE(S, arange) + CE(S^T, arange)) / 2. S: [B, B] float.
torch::Tensor ContrastiveLoss(const torch::Tensor& S);

// Every term is a 0-dim float tensor on S's device (0 when its option is off or the batch has
// no partner pairs, B < 2). `total` = text + image + group + v1 + pos_reg (the EqSim
// regulariser only: add ContrastiveLoss(S) yourself). `pos_reg` collects the pos_reg
// penalties of all enabled sides (the release adds them inside each side's term).
struct EqSimTerms {
  torch::Tensor text, image, group, v1, pos_reg, total;
  // The sampled partner pairs (a, j) as int64 [P, 2]; for inspection and tests.
  torch::Tensor pairs;
};

// Partner sampling (spec 2a, no gradient): for each anchor a, `sample_num` images drawn
// without replacement from softmax(S^T[a]) (caption a -> images) and `sample_num` captions
// from softmax(S[a]) (image a -> captions), both with entry a zeroed, computed from the raw S
// (before pre-softmax), like the release. sample_num is clamped to B - 1. Entries that
// underflow to 0 are lifted to a tiny positive value so that multinomial can always draw.
// `gen` may be null (torch's default generator). sample_num = -1: every unordered pair once,
// rows (a, j) with a < j (every term is symmetric in a <-> j, so this equals using both
// orders, as the release's full-batch path does). Returns int64 [P, 2] rows (a, j), on CPU.
torch::Tensor SampleEqSimPartners(const torch::Tensor& S, int sample_num,
                                  torch::Generator* gen);

// The EqSim terms (spec 2a, 2b). Pairs are drawn with SampleEqSimPartners. Throws
// c10::Error only on a non-square or non-2-D S (a programming error).
EqSimTerms EqSimLoss(const torch::Tensor& S, const EqSimOptions& options,
                     torch::Generator* gen);

// Same, with given partner pairs (int64 [P, 2]); used by EqSimLoss and by tests.
EqSimTerms EqSimLossWithPairs(const torch::Tensor& S, const EqSimOptions& options,
                              const torch::Tensor& pairs);

}  // namespace eqsim
