#include "model/nn/native_model.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "model/core/status_macros.h"

namespace eqsim {
namespace {

namespace F = torch::nn::functional;

constexpr char kWeightsFormat[] = "eqsim-native-v1";

int GroupsFor(int channels) { return std::gcd(8, channels); }

torch::nn::Conv2d Conv3x3(int in, int out, int stride) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

// A BasicBlock with GroupNorm; the second norm starts at gamma = 0 so every block begins as
// the identity (plus its shortcut projection), which keeps a deep-ish stack trainable
// without BatchNorm.
class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(int in, int out, int stride) {
    conv1_ = register_module("conv1", Conv3x3(in, out, stride));
    norm1_ = register_module("norm1",
                             torch::nn::GroupNorm(torch::nn::GroupNormOptions(GroupsFor(out), out)));
    conv2_ = register_module("conv2", Conv3x3(out, out, 1));
    norm2_ = register_module("norm2",
                             torch::nn::GroupNorm(torch::nn::GroupNormOptions(GroupsFor(out), out)));
    if (stride != 1 || in != out) {
      down_conv_ = register_module(
          "down_conv",
          torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).stride(stride).bias(false)));
      down_norm_ = register_module(
          "down_norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(GroupsFor(out), out)));
    }
    torch::NoGradGuard no_grad;
    torch::nn::init::kaiming_normal_(conv1_->weight, 0, torch::kFanOut, torch::kReLU);
    torch::nn::init::kaiming_normal_(conv2_->weight, 0, torch::kFanOut, torch::kReLU);
    if (down_conv_) {
      torch::nn::init::kaiming_normal_(down_conv_->weight, 0, torch::kFanOut, torch::kReLU);
    }
    norm2_->weight.zero_();
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::relu(norm1_(conv1_(x)));
    y = norm2_(conv2_(y));
    torch::Tensor shortcut = down_conv_ ? down_norm_(down_conv_(x)) : x;
    return torch::relu(y + shortcut);
  }

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, down_conv_{nullptr};
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr}, down_norm_{nullptr};
};
TORCH_MODULE(ResidualBlock);

// A pre-LN Transformer encoder layer: x + Attn(LN(x)), then x + MLP(LN(x)).
class TextLayerImpl : public torch::nn::Module {
 public:
  TextLayerImpl(int width, int heads, int layers) : width_(width), heads_(heads) {
    ln1_ = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
    attn_in_ = register_module("attn_in", torch::nn::Linear(width, 3 * width));
    attn_out_ = register_module("attn_out", torch::nn::Linear(width, width));
    ln2_ = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
    fc1_ = register_module("fc1", torch::nn::Linear(width, 4 * width));
    fc2_ = register_module("fc2", torch::nn::Linear(4 * width, width));
    torch::NoGradGuard no_grad;
    // CLIP's text-tower init: attention / fc std width^-0.5, output projections scaled down
    // with depth.
    const double attn_std = std::pow(width, -0.5);
    const double proj_std = attn_std * std::pow(2.0 * layers, -0.5);
    const double fc_std = std::pow(2.0 * width, -0.5);
    torch::nn::init::normal_(attn_in_->weight, 0.0, attn_std);
    torch::nn::init::normal_(attn_out_->weight, 0.0, proj_std);
    torch::nn::init::normal_(fc1_->weight, 0.0, fc_std);
    torch::nn::init::normal_(fc2_->weight, 0.0, proj_std);
    for (auto* l : {&attn_in_, &attn_out_, &fc1_, &fc2_}) (*l)->bias.zero_();
  }

  // x: [B, L, W]; pad: bool [B, L], true where the key must be ignored.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& pad) {
    const int64_t B = x.size(0), L = x.size(1);
    const int64_t D = width_ / heads_;
    torch::Tensor qkv = attn_in_(ln1_(x)).view({B, L, 3, heads_, D}).permute({2, 0, 3, 1, 4});
    torch::Tensor q = qkv[0], k = qkv[1], v = qkv[2];  // [B, H, L, D]
    torch::Tensor att = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(D)));
    att = att.masked_fill(pad.view({B, 1, 1, L}), -std::numeric_limits<float>::infinity());
    att = torch::softmax(att, -1);
    torch::Tensor y = torch::matmul(att, v).transpose(1, 2).reshape({B, L, width_});
    torch::Tensor h = x + attn_out_(y);
    return h + fc2_(F::gelu(fc1_(ln2_(h))));
  }

 private:
  int width_, heads_;
  torch::nn::LayerNorm ln1_{nullptr}, ln2_{nullptr};
  torch::nn::Linear attn_in_{nullptr}, attn_out_{nullptr}, fc1_{nullptr}, fc2_{nullptr};
};
TORCH_MODULE(TextLayer);

std::string ShapeString(const torch::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes().vec(), ", "), "]");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Options

absl::StatusOr<NativeModelOptions> NativeModelOptions::FromConfig(const config::ModelConfig& cfg,
                                                                  int vocab_size) {
  NativeModelOptions o;
  const auto& n = cfg.native();
  auto pick = [](int v, int def) { return v != 0 ? v : def; };
  o.image_width = pick(n.image_width(), o.image_width);
  o.image_stages = pick(n.image_stages(), o.image_stages);
  o.image_blocks = pick(n.image_blocks(), o.image_blocks);
  o.image_pool_grid = pick(n.image_pool_grid(), o.image_pool_grid);
  o.image_stem_stride = pick(n.image_stem_stride(), o.image_stem_stride);
  o.text_width = pick(n.text_width(), o.text_width);
  o.text_layers = pick(n.text_layers(), o.text_layers);
  o.text_heads = pick(n.text_heads(), o.text_heads);
  o.embed_dim = cfg.embed_dim() != 0 ? cfg.embed_dim() : (n.embed_dim() != 0 ? n.embed_dim() : o.embed_dim);
  if (cfg.embed_dim() != 0 && n.embed_dim() != 0 && cfg.embed_dim() != n.embed_dim()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "native.embed_dim %d differs from embed_dim %d", n.embed_dim(), cfg.embed_dim()));
  }
  if (n.init_logit_scale() != 0.f) o.init_logit_scale = n.init_logit_scale();
  if (cfg.tokenizer().context_length() != 0) {
    o.context_length = cfg.tokenizer().context_length();
  } else {
    o.context_length = cfg.tokenizer().kind() == config::TokenizerConfig::CLIP_BPE ? 77 : 16;
  }
  if (n.vocab_size() != 0) {
    if (vocab_size > 0 && n.vocab_size() < vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "native.vocab_size %d is smaller than the tokenizer's vocabulary (%d ids)",
          n.vocab_size(), vocab_size));
    }
    o.vocab_size = n.vocab_size();
  } else {
    o.vocab_size = vocab_size;
  }
  EQSIM_RETURN_IF_ERROR(o.Validate());
  return o;
}

absl::Status NativeModelOptions::Validate() const {
  auto bad = [](const char* field, int v, const char* what) {
    return absl::InvalidArgumentError(absl::StrFormat("native.%s must be %s, got %d", field, what, v));
  };
  if (image_width < 1 || image_width > 4096) return bad("image_width", image_width, "in [1, 4096]");
  if (image_stages < 1 || image_stages > 8) return bad("image_stages", image_stages, "in [1, 8]");
  if (image_blocks < 1 || image_blocks > 64) return bad("image_blocks", image_blocks, "in [1, 64]");
  if (image_pool_grid < 1 || image_pool_grid > 16) {
    return bad("image_pool_grid", image_pool_grid, "in [1, 16]");
  }
  if (image_stem_stride < 1 || image_stem_stride > 4) {
    return bad("image_stem_stride", image_stem_stride, "in [1, 4]");
  }
  if (static_cast<int64_t>(image_width) << (image_stages - 1) > 65536) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "native.image_width %d doubled over %d stages is too wide", image_width, image_stages));
  }
  if (text_width < 1 || text_width > 8192) return bad("text_width", text_width, "in [1, 8192]");
  if (text_layers < 1 || text_layers > 64) return bad("text_layers", text_layers, "in [1, 64]");
  if (text_heads < 1) return bad("text_heads", text_heads, ">= 1");
  if (text_width % text_heads != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "native.text_heads %d does not divide native.text_width %d", text_heads, text_width));
  }
  if (vocab_size < 1) return bad("vocab_size", vocab_size, ">= 1 (or set by the tokenizer)");
  if (context_length < 1 || context_length > 4096) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tokenizer.context_length must be in [1, 4096], got %d", context_length));
  }
  if (embed_dim < 1 || embed_dim > 65536) return bad("embed_dim", embed_dim, "in [1, 65536]");
  if (!std::isfinite(init_logit_scale)) {
    return absl::InvalidArgumentError("native.init_logit_scale must be finite");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Module

NativeDualEncoderImpl::NativeDualEncoderImpl(const NativeModelOptions& o) : options_(o) {
  const int w = o.image_width;
  stem_conv_ = register_module("stem_conv", Conv3x3(3, w, o.image_stem_stride));
  stem_norm_ = register_module("stem_norm",
                               torch::nn::GroupNorm(torch::nn::GroupNormOptions(GroupsFor(w), w)));
  stages_ = torch::nn::Sequential();
  int in = w;
  for (int s = 0; s < o.image_stages; ++s) {
    const int out = w << s;
    for (int b = 0; b < o.image_blocks; ++b) {
      stages_->push_back(ResidualBlock(in, out, b == 0 ? 2 : 1));
      in = out;
    }
  }
  register_module("stages", stages_);
  const int64_t pooled = int64_t{in} * o.image_pool_grid * o.image_pool_grid;
  image_pool_norm_ = register_module(
      "image_pool_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({pooled})));
  image_proj_ = register_module(
      "image_proj", torch::nn::Linear(in * o.image_pool_grid * o.image_pool_grid, o.embed_dim));

  token_embedding_ = register_module("token_embedding",
                                     torch::nn::Embedding(o.vocab_size, o.text_width));
  positional_embedding_ =
      register_parameter("positional_embedding", torch::empty({o.context_length, o.text_width}));
  text_layers_ = torch::nn::ModuleList();
  for (int l = 0; l < o.text_layers; ++l) {
    text_layers_->push_back(TextLayer(o.text_width, o.text_heads, o.text_layers));
  }
  register_module("text_layers", text_layers_);
  text_final_norm_ = register_module(
      "text_final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.text_width})));
  text_proj_ = register_module(
      "text_proj", torch::nn::Linear(torch::nn::LinearOptions(o.text_width, o.embed_dim).bias(false)));
  logit_scale_ = register_parameter("logit_scale", torch::full({}, o.init_logit_scale));

  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_normal_(stem_conv_->weight, 0, torch::kFanOut, torch::kReLU);
  torch::nn::init::normal_(token_embedding_->weight, 0.0, 0.02);
  torch::nn::init::normal_(positional_embedding_, 0.0, 0.01);
  torch::nn::init::normal_(text_proj_->weight, 0.0, std::pow(o.text_width, -0.5));
}

torch::Tensor NativeDualEncoderImpl::encode_image(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == 3, "encode_image expects [B, 3, H, W], got ",
              x.sizes());
  torch::Tensor h = torch::relu(stem_norm_(stem_conv_(x)));
  h = stages_->forward(h);
  h = F::adaptive_avg_pool2d(
      h, F::AdaptiveAvgPool2dFuncOptions({options_.image_pool_grid, options_.image_pool_grid}));
  return image_proj_(image_pool_norm_(h.flatten(1)));
}

torch::Tensor NativeDualEncoderImpl::encode_text(const torch::Tensor& ids) {
  TORCH_CHECK(ids.dim() == 2, "encode_text expects [B, L], got ", ids.sizes());
  const int64_t B = ids.size(0), L = ids.size(1);
  TORCH_CHECK(L >= 1 && L <= options_.context_length, "token length ", L,
              " is outside [1, context_length ", options_.context_length, "]");
  torch::Tensor nonpad = ids.ne(0);
  // A row of only padding still needs one key to attend to: unmask position 0 there.
  torch::Tensor pad = nonpad.logical_not();
  torch::Tensor empty_row = nonpad.any(1).logical_not();
  if (empty_row.any().item<bool>()) {
    pad = pad.clone();
    pad.select(1, 0).masked_fill_(empty_row, false);
  }
  torch::Tensor x = token_embedding_(ids) + positional_embedding_.slice(0, 0, L).unsqueeze(0);
  for (const auto& layer : *text_layers_) {
    x = layer->as<TextLayerImpl>()->forward(x, pad);
  }
  x = text_final_norm_(x);
  // EOS = the last non-pad position (0 for an all-pad row).
  torch::Tensor pos = torch::arange(L, ids.options().dtype(torch::kLong)).unsqueeze(0);
  torch::Tensor eos = (pos * nonpad.to(torch::kLong)).amax(1);
  torch::Tensor pooled = x.index({torch::arange(B, eos.options()), eos});
  return text_proj_(pooled);
}

torch::Tensor NativeDualEncoderImpl::logit_scale() {
  return torch::clamp_max(logit_scale_, kMaxLogitScale);
}

torch::Tensor NativeDualEncoderImpl::score_matrix(const torch::Tensor& image_emb,
                                                  const torch::Tensor& text_emb) {
  torch::Tensor a = F::normalize(image_emb, F::NormalizeFuncOptions().dim(1));
  torch::Tensor b = F::normalize(text_emb, F::NormalizeFuncOptions().dim(1));
  return logit_scale().exp() * torch::matmul(a, b.t());
}

int64_t NativeDualEncoderImpl::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

absl::StatusOr<NativeDualEncoder> BuildNativeModel(const config::ModelConfig& cfg, int vocab_size,
                                                   uint64_t seed) {
  EQSIM_ASSIGN_OR_RETURN(NativeModelOptions o, NativeModelOptions::FromConfig(cfg, vocab_size));
  try {
    torch::manual_seed(seed);
    return NativeDualEncoder(o);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cannot build the native model: ", e.what()));
  }
}

// ---------------------------------------------------------------------------------------------
// Weights

namespace {

c10::Dict<std::string, int64_t> ArchDict(const NativeModelOptions& o) {
  c10::Dict<std::string, int64_t> d;
  d.insert("image_width", o.image_width);
  d.insert("image_stages", o.image_stages);
  d.insert("image_blocks", o.image_blocks);
  d.insert("image_pool_grid", o.image_pool_grid);
  d.insert("image_stem_stride", o.image_stem_stride);
  d.insert("text_width", o.text_width);
  d.insert("text_layers", o.text_layers);
  d.insert("text_heads", o.text_heads);
  d.insert("vocab_size", o.vocab_size);
  d.insert("context_length", o.context_length);
  d.insert("embed_dim", o.embed_dim);
  return d;
}

std::vector<std::pair<std::string, torch::Tensor>> NamedState(NativeDualEncoderImpl& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : model.named_parameters(/*recurse=*/true)) out.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers(/*recurse=*/true)) out.emplace_back(b.key(), b.value());
  return out;
}

}  // namespace

absl::Status SaveNativeWeights(NativeDualEncoderImpl& model, const std::string& path) {
  try {
    c10::Dict<std::string, torch::Tensor> state;
    for (auto& [name, t] : NamedState(model)) {
      state.insert(name, t.detach().to(torch::kCPU, torch::kFloat).contiguous());
    }
    c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
    root.insert("format", std::string(kWeightsFormat));
    root.insert("arch", ArchDict(model.options()));
    root.insert("state_dict", state);
    std::vector<char> bytes = torch::pickle_save(root);
    std::error_code ec;
    std::filesystem::path p(path);
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
    const std::string tmp = path + ".tmp";
    {
      std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
      if (!f) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for writing"));
      f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      if (!f) return absl::DataLossError(absl::StrCat(path, ": write failed"));
    }
    std::filesystem::rename(tmp, path, ec);
    if (ec) return absl::InternalError(absl::StrCat(path, ": rename failed: ", ec.message()));
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(path, ": cannot save weights: ", e.what()));
  }
}

absl::Status LoadNativeWeights(NativeDualEncoderImpl& model, const std::string& path) {
  const std::string where = std::filesystem::path(path).filename().string();
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": file is empty"));
  c10::IValue root;
  try {
    root = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    msg = msg.substr(0, msg.find('\n'));
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a readable torch archive: ", msg));
  }
  if (!root.isGenericDict()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not an eqsim native weights file (top level is ",
                     root.tagKind(), ", expected a dict)"));
  }
  c10::impl::GenericDict dict = root.toGenericDict();
  if (!dict.contains("format") || !dict.at("format").isString() ||
      dict.at("format").toStringRef() != kWeightsFormat) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not an eqsim native weights file (missing or unknown 'format', expected '",
        kWeightsFormat, "')"));
  }
  if (!dict.contains("state_dict") || !dict.at("state_dict").isGenericDict()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": has no 'state_dict'"));
  }
  c10::impl::GenericDict state = dict.at("state_dict").toGenericDict();
  std::vector<std::string> unexpected;
  auto expected = NamedState(model);
  {
    std::set<std::string> names;
    for (auto& e : expected) names.insert(e.first);
    for (const auto& kv : state) {
      if (!kv.key().isString() || !names.count(kv.key().toStringRef())) {
        unexpected.push_back(kv.key().isString() ? kv.key().toStringRef() : "<non-string key>");
      }
    }
  }
  try {
    torch::NoGradGuard no_grad;
    // Validate everything before touching the model: names first (an architecture
    // mismatch), then shapes, dtypes and values.
    for (auto& [name, t] : expected) {
      if (!state.contains(name)) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": missing parameter '", name, "' (", path, ")"));
      }
    }
    if (!unexpected.empty()) {
      const size_t shown = std::min<size_t>(unexpected.size(), 5);
      std::vector<std::string> first(unexpected.begin(), unexpected.begin() + shown);
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": unexpected parameter", unexpected.size() > 1 ? "s" : "", " '",
          absl::StrJoin(first, "', '"), "'",
          unexpected.size() > shown ? absl::StrCat(" and ", unexpected.size() - shown, " more")
                                    : "",
          " not in the model built from config.pbtxt (", path, ")"));
    }
    for (auto& [name, t] : expected) {
      c10::IValue v = state.at(name);
      if (!v.isTensor()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": entry '", name, "' is not a tensor (", path, ")"));
      }
      torch::Tensor src = v.toTensor();
      if (src.sizes() != t.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": parameter '", name, "' has shape ", ShapeString(src), " in the file but ",
            ShapeString(t), " in the model built from config.pbtxt (", path, ")"));
      }
      if (!src.is_floating_point()) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": parameter '", name, "' has dtype ",
            std::string(c10::toString(src.scalar_type())),
            ", expected a floating-point tensor (", path, ")"));
      }
      if (!torch::isfinite(src).all().item<bool>()) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": parameter '", name, "' holds NaN or infinite values (", path, ")"));
      }
    }
    // Architecture fields that do not show in parameter shapes (older files may lack some).
    if (dict.contains("arch") && dict.at("arch").isGenericDict()) {
      c10::impl::GenericDict arch = dict.at("arch").toGenericDict();
      for (const auto& kv : ArchDict(model.options())) {
        const std::string key = kv.key();
        if (!arch.contains(key) || !arch.at(key).isInt()) continue;
        const int64_t saved = arch.at(key).toInt();
        if (saved != kv.value()) {
          const std::string field = key == "context_length" ? "tokenizer.context_length"
                                    : key == "embed_dim"    ? "embed_dim"
                                                            : "native." + key;
          return absl::InvalidArgumentError(absl::StrCat(
              where, " was saved with ", field, " ", saved,
              " but config.pbtxt builds ", kv.value(), " (", path, ")"));
        }
      }
    }
    for (auto& [name, t] : expected) {
      t.copy_(state.at(name).toTensor().to(t.device(), t.scalar_type()));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(path, ": cannot load weights: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace eqsim
