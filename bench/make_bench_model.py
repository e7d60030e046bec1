#!/usr/bin/python3
"""Writes a compute-heavy TorchScript dual encoder into a model repository, for the server
benchmark (BENCHMARKS.md): throughput does not depend on the weights, so they are random.

    /usr/bin/python3 bench/make_bench_model.py REPO [--name vit-mid] [--preset mid]
        [--vocab quickstart-data/models/baseline/vocab.txt]

Presets (image: a ViT on 64x64 inputs, NATIVE preprocessing; text: a pre-LN Transformer over
the WORD tokenizer's 16 positions):
    mid    image ViT width 384, 6 layers, patch 16;  text width 512, 6 layers   (~30 M params)
    small  image ViT width 256, 4 layers, patch 16;  text width 256, 4 layers   (~6 M params)
    clip   image ViT-B/32 at 224 (width 768, 12 layers); text width 512, 12 layers, 16 positions

Needs Debian's python3-torch (/usr/bin/python3). Writes REPO/NAME/config.pbtxt, vocab.txt and
REPO/NAME/1/model.pt.
"""
import argparse
import os
import shutil

import torch

PRESETS = {
    "small": dict(iw=256, il=4, patch=16, size=64, tw=256, tl=4),
    "mid": dict(iw=384, il=6, patch=16, size=64, tw=512, tl=6),
    "clip": dict(iw=768, il=12, patch=32, size=224, tw=512, tl=12),
}
CONTEXT = 16  # the WORD tokenizer's default context length
EMBED = 256


class Block(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.ln1 = torch.nn.LayerNorm(width)
        self.attn = torch.nn.MultiheadAttention(width, max(1, width // 64), batch_first=True)
        self.ln2 = torch.nn.LayerNorm(width)
        self.fc1 = torch.nn.Linear(width, 4 * width)
        self.fc2 = torch.nn.Linear(4 * width, width)

    def forward(self, x):
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))


class Dual(torch.nn.Module):
    def __init__(self, iw, il, patch, size, tw, tl, vocab):
        super().__init__()
        self.patchify = torch.nn.Conv2d(3, iw, patch, patch)
        n = (size // patch) ** 2 + 1
        self.cls = torch.nn.Parameter(torch.randn(1, 1, iw) * 0.02)
        self.ipos = torch.nn.Parameter(torch.randn(n, iw) * 0.02)
        self.iblocks = torch.nn.Sequential(*[Block(iw) for _ in range(il)])
        self.iln = torch.nn.LayerNorm(iw)
        self.iproj = torch.nn.Linear(iw, EMBED)
        self.emb = torch.nn.Embedding(vocab, tw)
        self.tpos = torch.nn.Parameter(torch.randn(CONTEXT, tw) * 0.02)
        self.tblocks = torch.nn.Sequential(*[Block(tw) for _ in range(tl)])
        self.tln = torch.nn.LayerNorm(tw)
        self.tproj = torch.nn.Linear(tw, EMBED)
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6052))

    @torch.jit.export
    def encode_image(self, x):
        h = self.patchify(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], 1) + self.ipos
        return self.iproj(self.iln(self.iblocks(h)[:, 0]))

    @torch.jit.export
    def encode_text(self, ids):
        h = self.tblocks(self.emb(ids) + self.tpos[: ids.shape[1]])
        mask = (ids != 0).unsqueeze(-1).to(h.dtype)
        h = (self.tln(h) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.tproj(h)

    def forward(self, x):
        return self.encode_image(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo")
    ap.add_argument("--name", default="")
    ap.add_argument("--preset", default="mid", choices=sorted(PRESETS))
    ap.add_argument("--vocab", required=True, help="a WORD vocabulary (one token per line)")
    a = ap.parse_args()
    p = PRESETS[a.preset]
    name = a.name or f"bench-{a.preset}"
    words = [w for w in open(a.vocab).read().split("\n") if w]
    vocab = 4 + len(words)  # [PAD] [UNK] [SOS] [EOS] + words
    torch.manual_seed(0)
    m = Dual(vocab=vocab, **p).eval()
    d = os.path.join(a.repo, name)
    os.makedirs(os.path.join(d, "1"), exist_ok=True)
    shutil.copyfile(a.vocab, os.path.join(d, "vocab.txt"))
    torch.jit.script(m).save(os.path.join(d, "1", "model.pt"))
    params = sum(t.numel() for t in m.parameters())
    with open(os.path.join(d, "config.pbtxt"), "w") as f:
        f.write(f'name: "{name}"\nbackend: TORCHSCRIPT\nembed_dim: {EMBED}\ndevice: CPU\n'
                f'image {{ recipe: NATIVE size: {p["size"]} }}\n'
                f'tokenizer {{ kind: WORD vocab_file: "vocab.txt" context_length: {CONTEXT} }}\n'
                f'description: "benchmark model, preset {a.preset}, random weights, '
                f'{params / 1e6:.1f} M parameters (bench/make_bench_model.py)"\n')
    print(f"{d}: preset {a.preset}, {params / 1e6:.1f} M parameters")


if __name__ == "__main__":
    main()
