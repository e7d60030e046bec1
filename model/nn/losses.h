// Contrastive (InfoNCE / ITC) and EqSim losses on a score matrix, exactly as
// ../shared/docs/eqsim-spec.md section 2 (the released code wins where it differs from the
// paper). torch header: only model/nn and model/train include it.
//
// S is [B, B], rows = images, columns = captions, S[x][y] = exp(logit_scale) * cos(I_x, T_y),
// matched pairs on the diagonal.
#pragma once

#include <torch/torch.h>

#include "model/core/eqsim_options.h"

namespace eqsim {

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
