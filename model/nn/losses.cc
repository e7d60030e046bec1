#include "model/nn/losses.h"

#include <vector>

namespace eqsim {
namespace {

torch::Tensor Zero(const torch::Tensor& like) { return torch::zeros({}, like.options()); }

// max(0, x - m)
torch::Tensor Hinge(const torch::Tensor& x, float m) { return torch::clamp_min(x - m, 0.0); }

torch::Tensor Mse(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).pow(2).mean(); }

torch::Tensor NegRelu(const torch::Tensor& x) { return torch::relu(-x).mean(); }

}  // namespace

torch::Tensor ContrastiveLoss(const torch::Tensor& S) {
  TORCH_CHECK(S.dim() == 2 && S.size(0) == S.size(1), "ContrastiveLoss expects a square [B, B] "
              "score matrix, got ", S.sizes());
  torch::Tensor labels = torch::arange(S.size(0), S.options().dtype(torch::kLong));
  return 0.5 * (torch::nn::functional::cross_entropy(S, labels) +
                torch::nn::functional::cross_entropy(S.t(), labels));
}

torch::Tensor SampleEqSimPartners(const torch::Tensor& S, int sample_num, torch::Generator* gen) {
  TORCH_CHECK(S.dim() == 2 && S.size(0) == S.size(1), "EqSim expects a square [B, B] score "
              "matrix, got ", S.sizes());
  const int64_t B = S.size(0);
  auto long_opts = torch::TensorOptions().dtype(torch::kLong);
  if (B < 2) return torch::empty({0, 2}, long_opts);
  if (sample_num < 0) {
    torch::Tensor idx = torch::triu_indices(B, B, 1, long_opts);  // [2, P], a < j
    return idx.t().contiguous();
  }
  const int64_t k = std::min<int64_t>(sample_num, B - 1);
  if (k == 0) return torch::empty({0, 2}, long_opts);
  torch::NoGradGuard no_grad;
  torch::Tensor s = S.detach().to(torch::kCPU, torch::kFloat);
  torch::Tensor eye = torch::eye(B, torch::kBool);
  auto probs = [&](const torch::Tensor& scores) {
    torch::Tensor p = torch::softmax(scores, 1);
    p = torch::nan_to_num(p, 1e-30, 1e-30, 1e-30).clamp_min(1e-30);  // multinomial can draw
    return p.masked_fill(eye, 0.0);
  };
  c10::optional<torch::Generator> g;
  if (gen != nullptr) g = *gen;
  torch::Tensor i2t = probs(s);      // image a -> captions
  torch::Tensor t2i = probs(s.t());  // caption a -> images
  torch::Tensor img_idx = torch::multinomial(t2i, k, /*replacement=*/false, g);  // [B, k]
  torch::Tensor txt_idx = torch::multinomial(i2t, k, /*replacement=*/false, g);  // [B, k]
  torch::Tensor partners = torch::cat({img_idx, txt_idx}, 1);                  // [B, 2k]
  torch::Tensor anchors = torch::arange(B, long_opts).unsqueeze(1).expand({B, 2 * k});
  return torch::stack({anchors.reshape(-1), partners.reshape(-1)}, 1).contiguous();
}

EqSimTerms EqSimLossWithPairs(const torch::Tensor& S, const EqSimOptions& o,
                              const torch::Tensor& pairs) {
  TORCH_CHECK(S.dim() == 2 && S.size(0) == S.size(1), "EqSim expects a square [B, B] score "
              "matrix, got ", S.sizes());
  TORCH_CHECK(pairs.dim() == 2 && pairs.size(1) == 2, "pairs must be [P, 2], got ", pairs.sizes());
  EqSimTerms t;
  t.pairs = pairs;
  t.text = Zero(S);
  t.image = Zero(S);
  t.group = Zero(S);
  t.v1 = Zero(S);
  t.pos_reg = Zero(S);
  if (pairs.size(0) == 0 || !o.any()) {
    t.total = Zero(S);
    return t;
  }
  const torch::Tensor Sp = o.pre_softmax ? torch::softmax(S, 1) : S;
  torch::Tensor p = pairs.to(S.device(), torch::kLong);
  torch::Tensor a = p.select(1, 0), j = p.select(1, 1);
  torch::Tensor diag = Sp.diagonal();
  torch::Tensor s_aa = diag.index_select(0, a);
  torch::Tensor s_jj = diag.index_select(0, j);
  torch::Tensor s_aj = Sp.index({a, j});  // image a, caption j
  torch::Tensor s_ja = Sp.index({j, a});  // image j, caption a
  const float w = o.weight, m = o.margin;
  // With `norm` the release divides by |s_aa| and |s_jj| and drops the weight.
  torch::Tensor n_aa = o.norm ? s_aa.abs() : torch::ones_like(s_aa);
  torch::Tensor n_jj = o.norm ? s_jj.abs() : torch::ones_like(s_jj);
  const double side_w = o.norm ? 1.0 : w;

  if (o.text_side) {
    t.text = side_w * Hinge(Mse((s_aa - s_aj) / n_aa, (s_jj - s_ja) / n_jj), m);
    if (o.pos_reg) t.pos_reg = t.pos_reg + NegRelu(s_aa - s_aj) + NegRelu(s_jj - s_ja);
  }
  if (o.image_side) {
    t.image = side_w * Hinge(Mse((s_aa - s_ja) / n_aa, (s_jj - s_aj) / n_jj), m);
    if (o.pos_reg) t.pos_reg = t.pos_reg + NegRelu(s_aa - s_ja) + NegRelu(s_jj - s_aj);
  }
  if (o.group_side) {
    t.group = side_w * (Hinge(Mse((s_aa - s_ja) / n_aa, (s_aa - s_aj) / n_aa), m) +
                        Hinge(Mse((s_jj - s_aj) / n_jj, (s_jj - s_ja) / n_jj), m));
    if (o.pos_reg) {
      t.pos_reg = t.pos_reg + NegRelu(s_aa - s_ja) + NegRelu(s_aa - s_aj) +
                  NegRelu(s_jj - s_aj) + NegRelu(s_jj - s_ja);
    }
  }
  if (o.v1) {
    const int64_t B = S.size(0);
    torch::Tensor mask = torch::ones({B, B}, S.options());
    {
      torch::NoGradGuard no_grad;
      torch::Tensor zeros = torch::zeros({p.size(0)}, S.options());
      mask.index_put_({a, j}, zeros);
      mask.index_put_({j, a}, zeros);
    }
    t.v1 = (w / o.prop) * Hinge(Mse(Sp * mask, Sp.t() * mask), o.margin_v1);
  }
  t.total = t.text + t.image + t.group + t.v1 + t.pos_reg;
  return t;
}

EqSimTerms EqSimLoss(const torch::Tensor& S, const EqSimOptions& o, torch::Generator* gen) {
  torch::Tensor pairs = SampleEqSimPartners(S, o.sample_num, gen);
  return EqSimLossWithPairs(S, o, pairs);
}

}  // namespace eqsim
