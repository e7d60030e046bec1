"""Python (PyTorch) twin of the native dual encoder in model/nn/native_model.h.

Loads a native weights.pt written by eqsim (eqsim-train / SaveNativeWeights) so that models
trained by the C++ trainer can be used, fine-tuned or exported from Python:

    import torch, native_model
    model = native_model.load("repo/fmnist/3/weights.pt").eval()
    img = model.encode_image(images)   # float [B, 3, H, W], preprocessed like the server does
    txt = model.encode_text(ids)       # int64 [B, L], zero padded
    scores = model.logit_scale().exp() * F.normalize(img) @ F.normalize(txt).T

tests/nn/torchscript_test.cc checks that this module and the C++ one give the same embeddings.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT = "eqsim-native-v1"
MAX_LOGIT_SCALE = math.log(100.0)


def _groups(channels):
    return math.gcd(8, channels)


class ResidualBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        if stride != 1 or cin != cout:
            self.down_conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.down_norm = nn.GroupNorm(_groups(cout), cout)
        else:
            self.down_conv = None

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        shortcut = self.down_norm(self.down_conv(x)) if self.down_conv is not None else x
        return F.relu(y + shortcut)


class TextLayer(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.attn_in = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x, pad):
        b, length, width = x.shape
        d = width // self.heads
        qkv = self.attn_in(self.ln1(x)).view(b, length, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
        att = att.masked_fill(pad.view(b, 1, 1, length), float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, length, width)
        h = x + self.attn_out(y)
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class NativeDualEncoder(nn.Module):
    def __init__(self, arch):
        super().__init__()
        a = dict(arch)
        self.arch = a
        w, grid = a["image_width"], a["image_pool_grid"]
        self.stem_conv = nn.Conv2d(3, w, 3, a.get("image_stem_stride", 2), 1, bias=False)
        self.stem_norm = nn.GroupNorm(_groups(w), w)
        blocks, cin = [], w
        for s in range(a["image_stages"]):
            cout = w << s
            for i in range(a["image_blocks"]):
                blocks.append(ResidualBlock(cin, cout, 2 if i == 0 else 1))
                cin = cout
        self.stages = nn.Sequential(*blocks)
        self.image_pool_norm = nn.LayerNorm(cin * grid * grid)
        self.image_proj = nn.Linear(cin * grid * grid, a["embed_dim"])
        tw = a["text_width"]
        self.token_embedding = nn.Embedding(a["vocab_size"], tw)
        self.positional_embedding = nn.Parameter(torch.zeros(a["context_length"], tw))
        self.text_layers = nn.ModuleList(
            [TextLayer(tw, a["text_heads"]) for _ in range(a["text_layers"])])
        self.text_final_norm = nn.LayerNorm(tw)
        self.text_proj = nn.Linear(tw, a["embed_dim"], bias=False)
        self.logit_scale_param = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, x):
        h = F.relu(self.stem_norm(self.stem_conv(x)))
        h = self.stages(h)
        grid = self.arch["image_pool_grid"]
        h = F.adaptive_avg_pool2d(h, (grid, grid)).flatten(1)
        return self.image_proj(self.image_pool_norm(h))

    def encode_text(self, ids):
        b, length = ids.shape
        nonpad = ids != 0
        pad = ~nonpad
        empty = ~nonpad.any(1)
        if bool(empty.any()):
            pad = pad.clone()
            pad[:, 0] &= ~empty
        x = self.token_embedding(ids) + self.positional_embedding[:length].unsqueeze(0)
        for layer in self.text_layers:
            x = layer(x, pad)
        x = self.text_final_norm(x)
        eos = (torch.arange(length, device=ids.device).unsqueeze(0) * nonpad.long()).amax(1)
        return self.text_proj(x[torch.arange(b, device=ids.device), eos])

    def logit_scale(self):
        return self.logit_scale_param.clamp(max=MAX_LOGIT_SCALE)


def load(path, map_location="cpu"):
    """Builds the model recorded in an eqsim native weights.pt and loads its parameters."""
    d = torch.load(path, map_location=map_location)
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{path}: not an eqsim native weights file (format {FORMAT})")
    model = NativeDualEncoder(d["arch"])
    state = dict(d["state_dict"])
    state["logit_scale_param"] = state.pop("logit_scale")
    model.load_state_dict(state, strict=True)
    return model
