"""The seeds' SimpleTransformer, done right, running offline on any device.

The original passed q, k and v separately to flash_attn_qkvpacked_func, fed
token ids straight into a Linear layer, never split heads, and needed a gated
Llama tokenizer. Here: a byte-level tokenizer (UTF-8 bytes, no download), an
embedding, q/k/v projected and packed as (B, S, 3, H, D), causal attention.

    python examples/simple_transformer.py
"""

import torch
from torch import nn

from flashtile import flash_attn_qkvpacked_func


class SimpleTransformer(nn.Module):
    def __init__(self, vocab_size=256, embed_size=256, heads=8):
        super().__init__()
        assert embed_size % heads == 0, "embed_size must be divisible by heads"
        self.heads = heads
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.qkv = nn.Linear(embed_size, 3 * embed_size, bias=False)
        self.fc_out = nn.Linear(embed_size, embed_size)

    def forward(self, token_ids):
        x = self.embed(token_ids)  # (B, S, E)
        B, S, E = x.shape
        qkv = self.qkv(x).view(B, S, 3, self.heads, E // self.heads)  # (B, S, 3, H, D)
        out = flash_attn_qkvpacked_func(qkv, causal=True)  # (B, S, H, D)
        return self.fc_out(out.reshape(B, S, E))


def encode(text: str) -> torch.Tensor:
    """Byte-level tokenizer: no vocabulary file, nothing to download."""
    return torch.tensor([list(text.encode("utf-8"))])


def main():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    model = SimpleTransformer().to(device, dtype)
    inputs = encode("Hello, how are you?").to(device)
    with torch.no_grad():
        output = model(inputs)
    print(f"device {device}, input {tuple(inputs.shape)} -> output {tuple(output.shape)} "
          f"{output.dtype}")
    print("first values:", output[0, 0, :6].float().tolist())


if __name__ == "__main__":
    main()
