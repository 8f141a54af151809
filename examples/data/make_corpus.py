"""Writes arithmetic.txt, the small training corpus for train_gpt.py.

Lines of two-digit sums and differences, and counting runs: structured enough
that a tiny GPT's loss falls visibly within a minute on a CPU. Deterministic.

    python examples/data/make_corpus.py
"""

import os
import random


def lines(n: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        kind = rng.random()
        if kind < 0.45:
            yield f"{a} + {b} = {a + b}"
        elif kind < 0.9:
            hi, lo = max(a, b), min(a, b)
            yield f"{hi} - {lo} = {hi - lo}"
        else:
            start = rng.randint(0, 90)
            yield "count: " + " ".join(str(start + i) for i in range(rng.randint(3, 9)))


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "arithmetic.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines(20000)) + "\n")
    print(path, os.path.getsize(path), "bytes")
