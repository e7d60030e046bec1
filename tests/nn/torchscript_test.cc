// TorchScript parity: /usr/bin/python3 builds small dual encoders (scripted and traced),
// saves them into a temporary model repository with their embeddings of real Fashion-MNIST
// pixels and fixed token ids; the C++ side loads them through LoadModelVersion, encodes the
// same inputs (read independently with LoadFashionMnist) and must agree to 1e-5.
// Also: Python can read the native weights.pt that C++ writes, and model/nn/native_model.py
// (the Python twin of the native model) gives the same embeddings as the C++ module.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/data/fashion_mnist.h"
#include "model/nn/encoder_factory.h"
#include "model/nn/native_init.h"
#include "model/nn/native_model.h"
#include "model/repo/repository.h"

namespace eqsim {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr int kImages = 6;
const std::vector<std::vector<int64_t>> kIds = {
    {2, 5, 9, 3, 0, 0, 0, 0}, {2, 7, 7, 11, 4, 3, 0, 0}, {2, 40, 3, 0, 0, 0, 0, 0}};

const char kScript[] = R"py(
import gzip, struct, sys, os
import numpy as np
import torch

root, fmnist = sys.argv[1], sys.argv[2]
torch.manual_seed(0)

class Dual(torch.nn.Module):
    def __init__(self, dim, with_scale):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.img_proj = torch.nn.Linear(16, dim)
        self.emb = torch.nn.Embedding(50, 24)
        self.pos = torch.nn.Parameter(torch.randn(16, 24) * 0.1)
        self.txt_proj = torch.nn.Linear(24, dim)
        if with_scale:
            self.logit_scale = torch.nn.Parameter(torch.tensor(3.25))

    def image_body(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h)).mean(dim=(2, 3))
        return self.img_proj(h)

    def text_body(self, ids):
        mask = (ids != 0).unsqueeze(-1).float()
        h = self.emb(ids) + self.pos[: ids.shape[1]]
        h = (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.txt_proj(torch.tanh(h))

    def forward(self, x):
        return self.image_body(x)

class ScriptDual(Dual):
    @torch.jit.export
    def encode_image(self, x):
        return self.image_body(x)

    @torch.jit.export
    def encode_text(self, ids):
        return self.text_body(ids)

class TraceDual(Dual):
    def encode_image(self, x):
        return self.image_body(x)

    def encode_text(self, ids):
        return self.text_body(ids)

class ImageOnly(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
    @torch.jit.export
    def encode_image(self, x):
        return self.lin(x.mean(dim=(2, 3)))
    def forward(self, x):
        return self.encode_image(x)

with gzip.open(fmnist, "rb") as f:
    magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
    assert magic == 2051
    px = np.frombuffer(f.read(N_IMAGES * rows * cols), dtype=np.uint8).reshape(N_IMAGES, rows, cols)
x = torch.from_numpy(px.astype(np.float32) / 255.0).unsqueeze(1).repeat(1, 3, 1, 1).contiguous()
ids = torch.tensor(IDS, dtype=torch.long)

def save(name, version, module, traced):
    d = os.path.join(root, name, str(version))
    os.makedirs(d, exist_ok=True)
    module.eval()
    with torch.no_grad():
        img = module.encode_image(x)
        txt = module.encode_text(ids)
    if traced:
        sm = torch.jit.trace_module(module, {"encode_image": x, "encode_text": ids})
    else:
        sm = torch.jit.script(module)
    sm.save(os.path.join(d, "model.pt"))
    img.numpy().astype("<f4").tofile(os.path.join(d, "img.f32"))
    txt.numpy().astype("<f4").tofile(os.path.join(d, "txt.f32"))

save("scripted", 1, ScriptDual(16, False), traced=False)
save("traced", 1, TraceDual(16, True), traced=True)
os.makedirs(os.path.join(root, "imgonly", "1"), exist_ok=True)
torch.jit.script(ImageOnly()).save(os.path.join(root, "imgonly", "1", "model.pt"))
print("ok")
)py";

void WriteFile(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
}

std::vector<float> ReadF32(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), {});
  std::vector<float> v(s.size() / 4);
  std::memcpy(v.data(), s.data(), v.size() * 4);
  return v;
}

std::string ModelConfigText(const std::string& name, int dim) {
  return "name: \"" + name + "\"\nbackend: TORCHSCRIPT\nembed_dim: " + std::to_string(dim) +
         "\ntokenizer { kind: WORD vocab_file: \"vocab.txt\" }\ndevice: CPU\n";
}

int RunPython(const std::string& script_path, const std::string& args, const std::string& log) {
  const std::string cmd = "/usr/bin/python3 " + script_path + " " + args + " > " + log + " 2>&1";
  return std::system(cmd.c_str());
}

std::string ReadAll(const std::string& p) {
  std::ifstream f(p);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

class TorchScriptTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string((fs::temp_directory_path() /
                             ("eqsim_ts_test_" + std::to_string(::getpid()))).string());
    fs::remove_all(*root_);
    fs::create_directories(*root_);
    std::string script = kScript;
    std::string ids = "[";
    for (const auto& row : kIds) {
      ids += "[";
      for (int64_t v : row) ids += std::to_string(v) + ",";
      ids += "],";
    }
    ids += "]";
    script.replace(script.find("IDS"), 3, ids);
    script.replace(script.find("N_IMAGES"), 8, std::to_string(kImages));
    script.replace(script.find("N_IMAGES"), 8, std::to_string(kImages));
    WriteFile(*root_ + "/make.py", script);
    const std::string log = *root_ + "/make.log";
    rc_ = RunPython(*root_ + "/make.py",
                    *root_ + " " + std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz",
                    log);
    log_ = new std::string(ReadAll(log));
    for (const char* name : {"scripted", "traced", "imgonly"}) {
      WriteFile(*root_ + "/" + name + "/vocab.txt", "bag\nred\nblue\n");
      WriteFile(*root_ + "/" + name + "/config.pbtxt", ModelConfigText(name, name[0] == 'i' ? 4 : 16));
    }
  }
  static void TearDownTestSuite() { fs::remove_all(*root_); }

  void SetUp() override { ASSERT_EQ(rc_, 0) << "python fixture failed:\n" << *log_; }

  // The same inputs the script used, built here from LoadFashionMnist.
  static ImageBatch Images() {
    auto data = LoadFashionMnist(FashionMnistSplit::kTest);
    EXPECT_TRUE(data.ok()) << data.status();
    ImageBatch b;
    b.n = kImages;
    b.height = b.width = 28;
    for (int i = 0; i < kImages; ++i)
      for (int c = 0; c < 3; ++c)
        for (int p = 0; p < 28 * 28; ++p) b.data.push_back(data->image(i)[p] / 255.0f);
    return b;
  }
  static TokenBatch Tokens() {
    TokenBatch t;
    t.n = static_cast<int64_t>(kIds.size());
    t.length = static_cast<int>(kIds[0].size());
    for (const auto& row : kIds) t.ids.insert(t.ids.end(), row.begin(), row.end());
    return t;
  }

  static void ExpectParity(const std::string& name) {
    auto m = LoadModelVersion(*root_, name, 1);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)->encoder->backend(), "torchscript");
    EXPECT_EQ((*m)->encoder->dim(), 16);
    auto img = (*m)->encoder->EncodeImages(Images());
    ASSERT_TRUE(img.ok()) << img.status();
    auto txt = (*m)->encoder->EncodeTexts(Tokens());
    ASSERT_TRUE(txt.ok()) << txt.status();
    const auto want_img = ReadF32(*root_ + "/" + name + "/1/img.f32");
    const auto want_txt = ReadF32(*root_ + "/" + name + "/1/txt.f32");
    ASSERT_EQ(want_img.size(), img->data.size());
    ASSERT_EQ(want_txt.size(), txt->data.size());
    float max_img = 0, max_txt = 0, norm = 0;
    for (size_t i = 0; i < want_img.size(); ++i) {
      max_img = std::max(max_img, std::abs(want_img[i] - img->data[i]));
      norm = std::max(norm, std::abs(want_img[i]));
    }
    for (size_t i = 0; i < want_txt.size(); ++i) {
      max_txt = std::max(max_txt, std::abs(want_txt[i] - txt->data[i]));
    }
    EXPECT_LT(max_img, 1e-5f);
    EXPECT_LT(max_txt, 1e-5f);
    EXPECT_GT(norm, 1e-3f) << "outputs are trivially zero";
  }

  static std::string* root_;
  static std::string* log_;
  static int rc_;
};
std::string* TorchScriptTest::root_ = nullptr;
std::string* TorchScriptTest::log_ = nullptr;
int TorchScriptTest::rc_ = -1;

TEST_F(TorchScriptTest, ScriptedModuleMatchesPython) {
  ExpectParity("scripted");
  auto m = LoadModelVersion(*root_, "scripted", 1);
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR((*m)->encoder->logit_scale(), std::log(100.0f), 1e-5);  // no logit_scale: ln(100)
}

TEST_F(TorchScriptTest, TracedModuleMatchesPython) {
  ExpectParity("traced");
  auto m = LoadModelVersion(*root_, "traced", 1);
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR((*m)->encoder->logit_scale(), 3.25f, 1e-6);  // the traced module's parameter
}

TEST_F(TorchScriptTest, ModuleWithoutEncodeTextIsRejected) {
  auto st = LoadModelVersion(*root_, "imgonly", 1).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("imgonly/1/model.pt: TorchScript module has no method encode_text"));
}

TEST_F(TorchScriptTest, WrongEmbedDimIsCaughtAtWarmUp) {
  WriteFile(*root_ + "/scripted/config.pbtxt", ModelConfigText("scripted", 32));
  auto st = LoadModelVersion(*root_, "scripted", 1).status();
  WriteFile(*root_ + "/scripted/config.pbtxt", ModelConfigText("scripted", 16));
  EXPECT_THAT(std::string(st.message()),
              HasSubstr("model scripted version 1: self-test encode of one image: torchscript "
                        "encode_image returned shape [1, 16] but config.pbtxt says embed_dim 32"));
}

TEST_F(TorchScriptTest, MissingOrCorruptModelFile) {
  WriteFile(*root_ + "/scripted/2/model.pt", "not a zip");
  auto st = LoadModelVersion(*root_, "scripted", 2).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("2/model.pt: not a loadable TorchScript module"));
  fs::create_directories(*root_ + "/scripted/3");
  st = LoadModelVersion(*root_, "scripted", 3).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(st.message()), HasSubstr("/scripted/3 has no model.pt (torchscript.file)"));
}

TEST_F(TorchScriptTest, BadInputsReturnErrorsNotCrashes) {
  auto m = LoadModelVersion(*root_, "scripted", 1);
  ASSERT_TRUE(m.ok());
  TokenBatch t = Tokens();
  t.ids[3] = 77;  // outside the Python model's 50-row embedding
  auto r = (*m)->encoder->EncodeTexts(t);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("torchscript encode_text failed"));
}

TEST_F(TorchScriptTest, NativeWeightsAreReadableFromPython) {
  config::ModelConfig cfg;
  cfg.set_name("n");
  cfg.set_backend(config::ModelConfig::NATIVE);
  cfg.set_embed_dim(16);
  cfg.mutable_tokenizer()->set_kind(config::TokenizerConfig::WORD);
  cfg.mutable_native()->set_image_width(8);
  cfg.mutable_native()->set_text_width(32);
  cfg.mutable_native()->set_text_layers(1);
  const std::string dir = *root_ + "/native/1";
  ASSERT_TRUE(WriteInitialNativeWeights(cfg, 20, 7, dir).ok());
  WriteFile(*root_ + "/read.py",
            "import sys, torch\n"
            "d = torch.load(sys.argv[1])\n"
            "assert d['format'] == 'eqsim-native-v1', d['format']\n"
            "sd = d['state_dict']\n"
            "print(d['arch']['embed_dim'], len(sd), tuple(sd['image_proj.weight'].shape))\n");
  const std::string log = *root_ + "/read.log";
  ASSERT_EQ(RunPython(*root_ + "/read.py", dir + "/weights.pt", log), 0) << ReadAll(log);
  auto params = NativeParameterCount(cfg, 20);
  ASSERT_TRUE(params.ok());
  // embed_dim 16; image_proj maps 2x2 pooled 32 channels (8 * 2^2) to 16.
  EXPECT_THAT(ReadAll(log), HasSubstr("16 "));
  EXPECT_THAT(ReadAll(log), HasSubstr("(16, 128)"));
}

TEST_F(TorchScriptTest, PythonTwinOfTheNativeModelMatches) {
  config::ModelConfig cfg;
  cfg.set_embed_dim(16);
  cfg.mutable_tokenizer()->set_kind(config::TokenizerConfig::WORD);
  auto* n = cfg.mutable_native();
  n->set_image_width(8);
  n->set_image_stages(2);
  n->set_image_blocks(2);
  n->set_text_width(32);
  n->set_text_layers(2);
  n->set_text_heads(4);
  auto model = BuildNativeModel(cfg, 50, 3);
  ASSERT_TRUE(model.ok()) << model.status();
  NativeDualEncoder m = *model;
  {
    // Move every parameter off its initial value (zero-initialised norms would hide paths).
    torch::NoGradGuard g;
    for (auto& p : m->parameters()) p.add_(0.2 * torch::randn_like(p));
  }
  const std::string dir = *root_ + "/twin";
  ASSERT_TRUE(SaveNativeWeights(*m, dir + "/weights.pt").ok());
  std::unique_ptr<Encoder> enc = MakeNativeEncoder(m, torch::kCPU);
  auto img = enc->EncodeImages(Images());
  auto txt = enc->EncodeTexts(Tokens());
  ASSERT_TRUE(img.ok() && txt.ok());
  std::string ids = "[";
  for (const auto& row : kIds) {
    ids += "[";
    for (int64_t v : row) ids += std::to_string(v) + ",";
    ids += "],";
  }
  ids += "]";
  WriteFile(dir + "/twin.py",
            "import sys, gzip, struct\n"
            "import numpy as np, torch\n"
            "sys.path.insert(0, sys.argv[2])\n"
            "import native_model\n"
            "m = native_model.load(sys.argv[1] + '/weights.pt').eval()\n"
            "with gzip.open(sys.argv[3], 'rb') as f:\n"
            "    magic, n, r, c = struct.unpack('>IIII', f.read(16))\n"
            "    px = np.frombuffer(f.read(" + std::to_string(kImages) + " * r * c), dtype=np.uint8)"
            ".reshape(-1, r, c)\n"
            "x = torch.from_numpy(px.astype(np.float32) / 255.0).unsqueeze(1).repeat(1, 3, 1, 1)\n"
            "ids = torch.tensor(" + ids + ", dtype=torch.long)\n"
            "with torch.no_grad():\n"
            "    m.encode_image(x).numpy().astype('<f4').tofile(sys.argv[1] + '/img.f32')\n"
            "    m.encode_text(ids).numpy().astype('<f4').tofile(sys.argv[1] + '/txt.f32')\n"
            "    print('logit_scale', float(m.logit_scale()))\n");
  const std::string log = dir + "/twin.log";
  ASSERT_EQ(RunPython(dir + "/twin.py",
                      dir + " " + std::string(EQSIM_SOURCE_DIR) + "/model/nn " +
                          std::string(kFashionMnistDir) + "/t10k-images-idx3-ubyte.gz",
                      log),
            0)
      << ReadAll(log);
  const auto want_img = ReadF32(dir + "/img.f32");
  const auto want_txt = ReadF32(dir + "/txt.f32");
  ASSERT_EQ(want_img.size(), img->data.size());
  ASSERT_EQ(want_txt.size(), txt->data.size());
  float di = 0, dt = 0;
  for (size_t i = 0; i < want_img.size(); ++i) di = std::max(di, std::abs(want_img[i] - img->data[i]));
  for (size_t i = 0; i < want_txt.size(); ++i) dt = std::max(dt, std::abs(want_txt[i] - txt->data[i]));
  EXPECT_LT(di, 1e-4f);
  EXPECT_LT(dt, 1e-4f);
  EXPECT_THAT(ReadAll(log), HasSubstr("logit_scale"));
}

}  // namespace
}  // namespace eqsim
