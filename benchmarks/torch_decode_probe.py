"""How fast can PyTorch decode the Llama-3.1-8B shape (random bf16 weights) at batch 1 on the lent
GPU, and which recipe gets there: a probe for the design of the `torch` engine (issue 6).

    PYTHONPATH=src python3 benchmarks/torch_decode_probe.py [--tokens 256] [--batch 1]

Variants, each timed over `--tokens` decode steps after a 128-token prefill:
- eager: transformers' model with a StaticCache, one forward per token;
- graph: the same single-token forward captured once in a CUDA graph and replayed
  (static input buffers; the gpt-fast recipe without torch.compile);
- compile+graph: the forward compiled by torch.compile (inductor, default mode),
  then captured in a CUDA graph as above.
Reported: tokens/s, the fraction of the bandwidth roofline (weights + KV cache per step over the
measured copy bandwidth), and J/token from NVML's counter. Prints markdown for RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
import traceback

import pynvml
import torch

from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config
from tradeoff.meters.calibrate import calibrate_cuda
from tradeoff.meters.roofline import request_cost


def build(batch: int, max_len: int):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM, LlamaConfig

    raw = {k: v for k, v in load_hf_config("llama-3.1-8b").items() if not k.startswith("_")}
    config = LlamaConfig(**raw)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.eval()
    return model, config


def static_cache(config, batch: int, max_len: int):  # type: ignore[no-untyped-def]
    from transformers import StaticCache

    try:
        return StaticCache(config=config, max_batch_size=batch, max_cache_len=max_len)
    except TypeError:
        return StaticCache(config=config, max_cache_len=max_len)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variants", default="eager,graph,compile+graph")
    args = parser.parse_args()
    prompt, steps, batch = 128, args.tokens, args.batch

    bandwidth = calibrate_cuda(2.0).peaks.bytes_per_s
    shape = shape_from_hf_config(load_hf_config("llama-3.1-8b"))
    cost = request_cost(shape, prompt, steps + 1, batch)
    roofline_s = sum(p.bytes for p in cost.decode) / bandwidth  # memory-bound decode
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)

    def energy_j() -> float:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3

    t0 = time.perf_counter()
    model, config = build(batch, prompt + steps + 8)
    built_s = time.perf_counter() - t0
    ids = torch.randint(0, config.vocab_size, (batch, prompt), device="cuda")
    rows: list[tuple[str, str]] = [("build the model on the GPU", f"{built_s:.1f} s")]

    @torch.inference_mode()
    def run(variant: str) -> None:
        cache = static_cache(config, batch, prompt + steps + 8)
        pos = torch.arange(prompt, device="cuda")
        logits = model(input_ids=ids, past_key_values=cache, cache_position=pos).logits
        token = logits[:, -1:].argmax(-1)
        step_ids = token.clone()
        step_pos = torch.tensor([prompt], device="cuda")
        call = model.forward
        if variant == "compile+graph":
            call = torch.compile(model.forward)

        def forward() -> torch.Tensor:
            return call(input_ids=step_ids, past_key_values=cache, cache_position=step_pos).logits

        if variant in ("graph", "compile+graph"):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    forward()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = forward()
            step = graph.replay
        else:
            out = None
            step = None
        torch.cuda.synchronize()
        time.sleep(0.3)  # let the counter move on
        e0, t_start = energy_j(), time.perf_counter()
        for i in range(steps):
            step_pos.fill_(prompt + i)
            if step is not None:
                step()
                logits = out
            else:
                logits = forward()
            step_ids.copy_(logits[:, -1:].argmax(-1))
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - t_start
        time.sleep(0.25)  # the counter moves every ~100 ms: read past the run's end
        joules = energy_j() - e0 - 0.25 * pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3
        tps = batch * steps / elapsed
        rows.append(
            (
                f"{variant}: decode, batch {batch}",
                f"{tps:.1f} tokens/s ({roofline_s / elapsed:.1%} of the bandwidth roofline, "
                f"{joules / (batch * steps):.2f} J/token)",
            )
        )

    for variant in args.variants.split(","):
        try:
            run(variant)
        except Exception as exc:  # record what fails: this is a probe
            rows.append((f"{variant}: failed", f"{type(exc).__name__}: {str(exc)[:200]}"))
            traceback.print_exc()

    import transformers

    print(f"Command: `PYTHONPATH=src python3 benchmarks/torch_decode_probe.py --tokens {steps} "
          f"--batch {batch} --variants {args.variants}`\n")  # fmt: skip
    print(
        f"{torch.cuda.get_device_name()}; torch {torch.__version__}, transformers "
        f"{transformers.__version__}; Llama-3.1-8B shape, random bf16 weights, {prompt}-token "
        f"prompt, {steps} decode steps; measured copy bandwidth {bandwidth / 1e12:.2f} TB/s, "
        f"bandwidth roofline {batch * steps / roofline_s:.0f} tokens/s\n"
    )
    print("| measurement | value |")
    print("| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
