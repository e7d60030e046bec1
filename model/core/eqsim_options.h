// The knobs of the EqSim regulariser (../shared/docs/eqsim-spec.md section 2), torch-free so
// that the trainer's options and the programs that fill them need no torch include. The loss
// itself is model/nn/losses.h.
#ifndef EQSIM_MODEL_CORE_EQSIM_OPTIONS_H_
#define EQSIM_MODEL_CORE_EQSIM_OPTIONS_H_

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
  static EqSimOptions Released() {
    EqSimOptions o;
    o.text_side = true;
    o.image_side = true;
    o.v1 = true;
    o.weight = 0.5f;
    o.margin = 0.1f;
    o.sample_num = 4;
    o.pre_softmax = true;
    return o;
  }
  bool any() const { return text_side || image_side || group_side || v1; }
};

}  // namespace eqsim

#endif  // EQSIM_MODEL_CORE_EQSIM_OPTIONS_H_
