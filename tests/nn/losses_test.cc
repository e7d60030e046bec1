// EqSim and contrastive losses against the spec (../shared/docs/eqsim-spec.md section 2):
// the worked example, hand-computed B = 3 batches, an independent plain-C++ reference,
// gradients and partner sampling.
#include "model/nn/losses.h"

#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace eqsim {
namespace {

torch::Tensor Mat(const std::vector<std::vector<double>>& rows) {
  const int64_t n = static_cast<int64_t>(rows.size());
  torch::Tensor t = torch::empty({n, n}, torch::kFloat);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) t[i][j] = rows[i][j];
  return t;
}

float F(const torch::Tensor& t) { return t.item<float>(); }

torch::Tensor Pairs(const std::vector<std::pair<int, int>>& p) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(p.size()), 2}, torch::kLong);
  for (size_t i = 0; i < p.size(); ++i) {
    t[i][0] = p[i].first;
    t[i][1] = p[i].second;
  }
  return t;
}

EqSimOptions Plain() {
  EqSimOptions o;
  o.text_side = o.image_side = o.v1 = true;
  o.weight = 1;
  o.margin = 0;
  o.sample_num = -1;
  return o;
}

// Spec 2d: S = [[2, 0.5], [1, 3]], one pair (0, 1): text 0.25, image 2.25, v1 0.
TEST(EqSimLoss, SpecWorkedExample) {
  EqSimTerms t = EqSimLoss(Mat({{2.0, 0.5}, {1.0, 3.0}}), Plain(), nullptr);
  ASSERT_EQ(t.pairs.size(0), 1);
  EXPECT_EQ(t.pairs[0][0].item<int64_t>(), 0);
  EXPECT_EQ(t.pairs[0][1].item<int64_t>(), 1);
  EXPECT_FLOAT_EQ(F(t.text), 0.25f);
  EXPECT_FLOAT_EQ(F(t.image), 2.25f);
  EXPECT_FLOAT_EQ(F(t.v1), 0.0f);
  EXPECT_FLOAT_EQ(F(t.group), 0.0f);
  EXPECT_FLOAT_EQ(F(t.total), 2.5f);
}

TEST(EqSimLoss, SpecWorkedExamplePreSoftmax) {
  EqSimOptions o = Plain();
  o.pre_softmax = true;
  EqSimTerms t = EqSimLoss(Mat({{2.0, 0.5}, {1.0, 3.0}}), o, nullptr);
  // Row softmax over captions, by hand.
  const double r0 = std::exp(2.0) + std::exp(0.5), r1 = std::exp(1.0) + std::exp(3.0);
  const double p00 = std::exp(2.0) / r0, p01 = std::exp(0.5) / r0;
  const double p10 = std::exp(1.0) / r1, p11 = std::exp(3.0) / r1;
  const double text = std::pow((p00 - p01) - (p11 - p10), 2);
  const double image = std::pow((p00 - p10) - (p11 - p01), 2);
  EXPECT_NEAR(F(t.text), text, 1e-6);
  EXPECT_NEAR(F(t.image), image, 1e-6);
  EXPECT_NEAR(F(t.v1), 0.0, 1e-7);
  // Sanity on the hand numbers themselves: pre-softmax changes the result.
  EXPECT_GT(std::abs(text - 0.25), 0.1);
}

// B = 3, sample_num = -1 -> pairs (0,1), (0,2), (1,2).
// S = [[3,1,0],[2,4,1],[0,2,5]]
//   (0,1): s_aa 3, s_aj 1, s_ja 2, s_jj 4: text (3-1)-(4-2)=0 -> 0, image (3-2)-(4-1)=-2 -> 4
//   (0,2): s_aa 3, s_aj 0, s_ja 0, s_jj 5: text -2 -> 4, image -2 -> 4
//   (1,2): s_aa 4, s_aj 1, s_ja 2, s_jj 5: text 0 -> 0, image (4-2)-(5-1)=-2 -> 4
//   text mean 4/3, image mean 4.
TEST(EqSimLoss, HandComputedBatchOfThree) {
  const torch::Tensor S = Mat({{3, 1, 0}, {2, 4, 1}, {0, 2, 5}});
  EqSimOptions o = Plain();
  o.v1 = false;
  EqSimTerms t = EqSimLoss(S, o, nullptr);
  EXPECT_EQ(t.pairs.size(0), 3);
  EXPECT_NEAR(F(t.text), 4.0 / 3.0, 1e-6);
  EXPECT_NEAR(F(t.image), 4.0, 1e-6);

  // weight 0.5, margin 0.1 (after the mean).
  o.weight = 0.5f;
  o.margin = 0.1f;
  t = EqSimLoss(S, o, nullptr);
  EXPECT_NEAR(F(t.text), 0.5 * (4.0 / 3.0 - 0.1), 1e-6);
  EXPECT_NEAR(F(t.image), 0.5 * (4.0 - 0.1), 1e-6);
  // A margin above the mean zeroes the term.
  o.margin = 5.0f;
  t = EqSimLoss(S, o, nullptr);
  EXPECT_FLOAT_EQ(F(t.text), 0.f);
  EXPECT_FLOAT_EQ(F(t.image), 0.f);

  // group: ((s_aa-s_ja)-(s_aa-s_aj))^2 = (s_aj-s_ja)^2: 1, 0, 1 -> 2/3; the second bracket is
  // the same square -> group = 4/3.
  EqSimOptions g;
  g.group_side = true;
  t = EqSimLoss(S, g, nullptr);
  EXPECT_NEAR(F(t.group), 4.0 / 3.0, 1e-6);
  EXPECT_FLOAT_EQ(F(t.text), 0.f);

  // norm: ((s_aa-s_aj)/|s_aa| - (s_jj-s_ja)/|s_jj|)^2 = (2/3-1/2)^2, (1-1)^2, (3/4-3/5)^2;
  // the weight is ignored.
  EqSimOptions n;
  n.text_side = true;
  n.norm = true;
  n.weight = 0.5f;
  t = EqSimLoss(S, n, nullptr);
  const double expect_norm = (std::pow(2.0 / 3 - 0.5, 2) + 0 + std::pow(0.75 - 0.6, 2)) / 3;
  EXPECT_NEAR(F(t.text), expect_norm, 1e-6);
}

// v1 with one explicit pair (0,1): M zeroes (0,1) and (1,0); S (.) M - S^T (.) M is nonzero at
// (1,2): 1-2 and (2,1): 2-1 -> MSE = 2/9.
TEST(EqSimLoss, HandComputedV1) {
  const torch::Tensor S = Mat({{3, 1, 0}, {2, 4, 1}, {0, 2, 5}});
  EqSimOptions o;
  o.v1 = true;
  EqSimTerms t = EqSimLossWithPairs(S, o, Pairs({{0, 1}}));
  EXPECT_NEAR(F(t.v1), 2.0 / 9.0, 1e-6);
  o.weight = 0.5f;
  o.prop = 2.0f;
  t = EqSimLossWithPairs(S, o, Pairs({{0, 1}}));
  EXPECT_NEAR(F(t.v1), 0.25 * 2.0 / 9.0, 1e-6);
  o.margin_v1 = 0.5f;  // above the MSE -> 0
  t = EqSimLossWithPairs(S, o, Pairs({{0, 1}}));
  EXPECT_FLOAT_EQ(F(t.v1), 0.f);
  // All pairs masked (sample_num = -1): only the diagonal is left, and it is symmetric.
  o.margin_v1 = 0.f;
  t = EqSimLoss(S, o, nullptr);
  EXPECT_FLOAT_EQ(F(t.v1), 0.f);
}

// pos_reg on S = [[1,3,0],[2,4,1],[0,2,5]]:
//   text : relu(-(s_aa-s_aj)) = 2, 0, 0 -> 2/3; relu(-(s_jj-s_ja)) = 0 -> text pos_reg 2/3
//   image: relu(-(s_aa-s_ja)) = 1, 0, 0 -> 1/3; relu(-(s_jj-s_aj)) = 0 -> image pos_reg 1/3
TEST(EqSimLoss, HandComputedPosReg) {
  const torch::Tensor S = Mat({{1, 3, 0}, {2, 4, 1}, {0, 2, 5}});
  EqSimOptions o;
  o.text_side = true;
  o.pos_reg = true;
  EqSimTerms t = EqSimLoss(S, o, nullptr);
  EXPECT_NEAR(F(t.pos_reg), 2.0 / 3.0, 1e-6);
  o.text_side = false;
  o.image_side = true;
  t = EqSimLoss(S, o, nullptr);
  EXPECT_NEAR(F(t.pos_reg), 1.0 / 3.0, 1e-6);
  o.text_side = true;
  t = EqSimLoss(S, o, nullptr);
  EXPECT_NEAR(F(t.pos_reg), 1.0, 1e-6);
  EXPECT_NEAR(F(t.total), F(t.text) + F(t.image) + 1.0, 1e-5);
}

// An independent reference written straight from the spec's formulas, with loops over the
// pair list, for random matrices and every option.
struct Ref {
  double text = 0, image = 0, group = 0, v1 = 0, pos = 0;
};
Ref Reference(std::vector<std::vector<double>> S, const std::vector<std::pair<int, int>>& pairs,
              const EqSimOptions& o) {
  const int B = static_cast<int>(S.size());
  if (o.pre_softmax) {
    for (auto& row : S) {
      double z = 0;
      for (double v : row) z += std::exp(v);
      for (double& v : row) v = std::exp(v) / z;
    }
  }
  auto hinge = [](double x) { return x > 0 ? x : 0; };
  auto relu_neg = [](double x) { return x < 0 ? -x : 0; };
  double t = 0, im = 0, g1 = 0, g2 = 0, pt = 0, pi = 0, pg = 0;
  for (auto [a, j] : pairs) {
    double saa = S[a][a], sjj = S[j][j], saj = S[a][j], sja = S[j][a];
    double na = o.norm ? std::abs(saa) : 1, nj = o.norm ? std::abs(sjj) : 1;
    t += std::pow((saa - saj) / na - (sjj - sja) / nj, 2);
    im += std::pow((saa - sja) / na - (sjj - saj) / nj, 2);
    g1 += std::pow((saa - sja) / na - (saa - saj) / na, 2);
    g2 += std::pow((sjj - saj) / nj - (sjj - sja) / nj, 2);
    pt += relu_neg(saa - saj) + relu_neg(sjj - sja);
    pi += relu_neg(saa - sja) + relu_neg(sjj - saj);
    pg += relu_neg(saa - sja) + relu_neg(saa - saj) + relu_neg(sjj - saj) + relu_neg(sjj - sja);
  }
  const double P = static_cast<double>(pairs.size());
  const double w = o.norm ? 1.0 : o.weight;
  Ref r;
  if (o.text_side) r.text = w * hinge(t / P - o.margin), r.pos += o.pos_reg ? pt / P : 0;
  if (o.image_side) r.image = w * hinge(im / P - o.margin), r.pos += o.pos_reg ? pi / P : 0;
  if (o.group_side) {
    r.group = w * (hinge(g1 / P - o.margin) + hinge(g2 / P - o.margin));
    r.pos += o.pos_reg ? pg / P : 0;
  }
  if (o.v1) {
    std::vector<std::vector<double>> M(B, std::vector<double>(B, 1.0));
    for (auto [a, j] : pairs) M[a][j] = M[j][a] = 0;
    double mse = 0;
    for (int x = 0; x < B; ++x)
      for (int y = 0; y < B; ++y) mse += std::pow(S[x][y] * M[x][y] - S[y][x] * M[x][y], 2);
    r.v1 = (o.weight / o.prop) * hinge(mse / (B * B) - o.margin_v1);
  }
  return r;
}

TEST(EqSimLoss, MatchesIndependentReferenceOnRandomBatches) {
  std::mt19937 rng(7);
  std::normal_distribution<double> nd(0.0, 3.0);
  std::uniform_int_distribution<int> coin(0, 1);
  for (int trial = 0; trial < 60; ++trial) {
    const int B = 2 + trial % 7;
    std::vector<std::vector<double>> s(B, std::vector<double>(B));
    for (auto& row : s)
      for (double& v : row) v = nd(rng);
    EqSimOptions o;
    o.text_side = coin(rng);
    o.image_side = coin(rng);
    o.group_side = coin(rng);
    o.v1 = coin(rng) || !(o.text_side || o.image_side || o.group_side);
    o.norm = coin(rng);
    o.pos_reg = coin(rng);
    o.pre_softmax = coin(rng);
    o.weight = 0.25f + 0.25f * (trial % 4);
    o.margin = (trial % 3) * 0.05f;
    o.margin_v1 = (trial % 2) * 0.01f;
    o.prop = 1.0f + (trial % 2);
    o.sample_num = trial % 3 == 0 ? -1 : 1 + trial % 4;
    torch::Tensor S = torch::empty({B, B}, torch::kDouble);
    for (int i = 0; i < B; ++i)
      for (int j = 0; j < B; ++j) S[i][j] = s[i][j];
    torch::Generator gen = at::detail::createCPUGenerator(100 + trial);
    EqSimTerms t = EqSimLoss(S, o, &gen);
    std::vector<std::pair<int, int>> pairs;
    for (int64_t p = 0; p < t.pairs.size(0); ++p) {
      pairs.emplace_back(t.pairs[p][0].item<int64_t>(), t.pairs[p][1].item<int64_t>());
    }
    ASSERT_FALSE(pairs.empty());
    Ref r = Reference(s, pairs, o);
    SCOPED_TRACE(testing::Message() << "trial " << trial << " B " << B);
    EXPECT_NEAR(t.text.item<double>(), r.text, 1e-9 + 1e-9 * r.text);
    EXPECT_NEAR(t.image.item<double>(), r.image, 1e-9 + 1e-9 * r.image);
    EXPECT_NEAR(t.group.item<double>(), r.group, 1e-9 + 1e-9 * r.group);
    EXPECT_NEAR(t.v1.item<double>(), r.v1, 1e-9 + 1e-9 * r.v1);
    EXPECT_NEAR(t.pos_reg.item<double>(), r.pos, 1e-9 + 1e-9 * r.pos);
    const double sum = r.text + r.image + r.group + r.v1 + r.pos;
    EXPECT_NEAR(t.total.item<double>(), sum, 1e-9 * (1 + sum));
  }
}

TEST(EqSimLoss, GradientsFlowAndSampledPairsCarryNone) {
  torch::manual_seed(3);
  torch::Tensor img = torch::randn({6, 8}, torch::requires_grad());
  torch::Tensor txt = torch::randn({6, 8}, torch::requires_grad());
  torch::Tensor S = 10.0 * torch::matmul(torch::nn::functional::normalize(img),
                                         torch::nn::functional::normalize(txt).t());
  EqSimOptions o = EqSimOptions::Released();
  o.group_side = true;
  o.pos_reg = true;
  o.margin = 0;
  torch::Generator gen = at::detail::createCPUGenerator(1);
  EqSimTerms t = EqSimLoss(S, o, &gen);
  EXPECT_FALSE(t.pairs.requires_grad());
  EXPECT_EQ(t.pairs.scalar_type(), torch::kLong);
  ASSERT_TRUE(t.total.requires_grad());
  torch::Tensor loss = ContrastiveLoss(S) + t.total;
  loss.backward();
  ASSERT_TRUE(img.grad().defined());
  ASSERT_TRUE(txt.grad().defined());
  EXPECT_GT(img.grad().abs().sum().item<float>(), 0.f);
  EXPECT_GT(txt.grad().abs().sum().item<float>(), 0.f);
  EXPECT_TRUE(torch::isfinite(img.grad()).all().item<bool>());
}

TEST(EqSimLoss, EqSimGradientAloneReducesTheTerm) {
  // Gradient descent on the EqSim terms alone must lower them (a sign / wiring check).
  torch::manual_seed(5);
  torch::Tensor S = (3 * torch::randn({5, 5})).requires_grad_();
  EqSimOptions o;
  o.text_side = o.image_side = o.v1 = true;
  const float before = EqSimLoss(S, o, nullptr).total.item<float>();
  torch::optim::SGD opt({S}, 0.05);
  for (int i = 0; i < 50; ++i) {
    opt.zero_grad();
    EqSimLoss(S, o, nullptr).total.backward();
    opt.step();
  }
  const float after = EqSimLoss(S, o, nullptr).total.item<float>();
  EXPECT_LT(after, 0.2f * before);
}

TEST(EqSimSampling, RespectsSampleNumAndNeverPicksTheAnchor) {
  torch::manual_seed(11);
  const int B = 9, k = 3;
  torch::Tensor S = 5 * torch::randn({B, B});
  torch::Generator gen = at::detail::createCPUGenerator(42);
  for (int rep = 0; rep < 20; ++rep) {
    torch::Tensor p = SampleEqSimPartners(S, k, &gen);
    ASSERT_EQ(p.size(0), B * 2 * k);
    for (int a = 0; a < B; ++a) {
      std::set<int64_t> imgs, txts;
      for (int i = 0; i < 2 * k; ++i) {
        const int64_t row = a * 2 * k + i;
        ASSERT_EQ(p[row][0].item<int64_t>(), a);
        const int64_t j = p[row][1].item<int64_t>();
        ASSERT_NE(j, a);
        ASSERT_GE(j, 0);
        ASSERT_LT(j, B);
        (i < k ? imgs : txts).insert(j);
      }
      EXPECT_EQ(imgs.size(), size_t{k}) << "images drawn without replacement";
      EXPECT_EQ(txts.size(), size_t{k}) << "captions drawn without replacement";
    }
  }
  // sample_num above B - 1 is clamped: every other index, once per direction.
  torch::Tensor p = SampleEqSimPartners(S.slice(0, 0, 3).slice(1, 0, 3), 10, &gen);
  EXPECT_EQ(p.size(0), 3 * 2 * 2);
  // B = 1: no partners, zero loss.
  EqSimTerms t = EqSimLoss(torch::ones({1, 1}), EqSimOptions::Released(), &gen);
  EXPECT_EQ(t.pairs.size(0), 0);
  EXPECT_FLOAT_EQ(t.total.item<float>(), 0.f);
}

TEST(EqSimSampling, FollowsTheSoftmaxAndIsReproducible) {
  // Image 0 is far closer to caption 2 than to anything else, and caption 0 to image 3:
  // with sample_num 1 the text->image draw picks 3, the image->text draw picks 2.
  torch::Tensor S = torch::zeros({5, 5});
  S[0][2] = 30;
  S[3][0] = 30;
  torch::Generator g1 = at::detail::createCPUGenerator(9);
  for (int rep = 0; rep < 10; ++rep) {
    torch::Tensor p = SampleEqSimPartners(S, 1, &g1);
    EXPECT_EQ(p[0][1].item<int64_t>(), 3);  // caption 0 -> images: image 3
    EXPECT_EQ(p[1][1].item<int64_t>(), 2);  // image 0 -> captions: caption 2
  }
  // Huge scores make the softmax underflow to exact zeros; drawing still works.
  torch::Tensor big = 1000 * torch::eye(6) + torch::arange(36).reshape({6, 6}).to(torch::kFloat);
  torch::Tensor pb = SampleEqSimPartners(big, 4, &g1);
  EXPECT_EQ(pb.size(0), 6 * 8);
  // Same seed, same draws.
  torch::Tensor R = torch::randn({8, 8});
  torch::Generator a = at::detail::createCPUGenerator(123), b = at::detail::createCPUGenerator(123);
  EXPECT_TRUE(torch::equal(SampleEqSimPartners(R, 3, &a), SampleEqSimPartners(R, 3, &b)));
}

TEST(ContrastiveLoss, MatchesHandComputedCrossEntropy) {
  // S = [[2, 0.5], [1, 3]]: rows (image->text) CE: -log softmax diag; columns likewise.
  const torch::Tensor S = Mat({{2.0, 0.5}, {1.0, 3.0}});
  auto lse = [](double a, double b) { return std::log(std::exp(a) + std::exp(b)); };
  const double rows = ((lse(2, 0.5) - 2) + (lse(1, 3) - 3)) / 2;
  const double cols = ((lse(2, 1) - 2) + (lse(0.5, 3) - 3)) / 2;
  EXPECT_NEAR(ContrastiveLoss(S).item<float>(), (rows + cols) / 2, 1e-6);
}

TEST(EqSimOptions, ReleasedRecipe) {
  EqSimOptions o = EqSimOptions::Released();
  EXPECT_TRUE(o.text_side);
  EXPECT_TRUE(o.image_side);
  EXPECT_FALSE(o.group_side);
  EXPECT_TRUE(o.v1);
  EXPECT_FLOAT_EQ(o.weight, 0.5f);
  EXPECT_FLOAT_EQ(o.margin, 0.1f);
  EXPECT_FLOAT_EQ(o.margin_v1, 0.f);
  EXPECT_FLOAT_EQ(o.prop, 1.f);
  EXPECT_EQ(o.sample_num, 4);
  EXPECT_TRUE(o.pre_softmax);
  EXPECT_FALSE(o.norm);
  EXPECT_FALSE(o.pos_reg);
}

}  // namespace
}  // namespace eqsim
