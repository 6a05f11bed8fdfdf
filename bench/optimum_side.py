"""Baseline: Optimum's ORTModelForSeq2SeqLM, run by `attnserve bench single --optimum-python`.

Optimum pins transformers < 4.58 while attnserve's exporter uses 5.24, so it lives in a side
environment (`make bench-optimum-env`) and this file runs there as a plain script: it imports
nothing from attnserve. It exports the checkpoint with Optimum once, then answers one line per
request on stdin (a JSON list of token ids) with one line on stdout (a JSON object with the
seconds `generate()` took and the tokens it made), so the caller can time it in rotation with
its other variants.
"""

from __future__ import annotations

import json
import sys
import time


def main(checkpoint: str, new_tokens: int) -> None:
    import torch
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    model = ORTModelForSeq2SeqLM.from_pretrained(checkpoint, export=True)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        ids = torch.tensor([json.loads(line)])
        started = time.perf_counter()
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            num_beams=1,
            do_sample=False,
        )
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": seconds, "tokens": out[0, 1:].tolist()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
