"""benchmarks/tokenizer_settings_table.py: one markdown row per label, mean +- sample std over a label's seeds."""

import statistics

from benchmarks import tokenizer_settings_table as tst


def _row(label, codes, collisions, sim, levels):
    return {"setting": label, "run": f"runs/{label}", "first_level_codes_start": 256, "first_level_gini_start": 0.4,
            "first_level_codes": codes, "first_level_gini": 0.9, "first_level_codes_end": codes,
            "codes_used_per_level": levels,
            "collisions_before": collisions, "cf_pair_similarity": sim, "recon": 0.007, "best_epoch": 100,
            "seconds_per_epoch": 0.5}


def test_seeds_make_one_row_of_mean_and_std():
    rows = [_row("letter", 70, 0.07, 0.17, "70/256/250/256"), _row("letter", 80, 0.08, 0.19, "80/256/252/256"),
            _row("letter", 75, 0.06, 0.18, "75/256/251/256"), _row("rqvae", 96, 0.0746, 0.0628, "96/184/202/256")]
    table = tst.markdown(rows).splitlines()
    assert len(table) == 4   # header, rule, one row per label
    letter = [c.strip() for c in table[2].strip("|").split("|")]
    assert letter[0] == "letter (3 seeds)"
    assert letter[3] == f"75 +- {statistics.stdev([70, 80, 75]):.0f}"
    assert letter[6] == "75/256/251/256"
    assert letter[7] == f"7.00 +- {statistics.stdev([7.0, 8.0, 6.0]):.2f}%"
    assert letter[8] == f"{0.18:.4f} +- {statistics.stdev([0.17, 0.19, 0.18]):.4f}"
    rqvae = [c.strip() for c in table[3].strip("|").split("|")]
    assert rqvae[0] == "rqvae" and rqvae[3] == "96" and rqvae[7] == "7.46%"
