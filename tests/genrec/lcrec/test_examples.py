"""LC-Rec examples: leave-one-out protocol, history of the last 20, seeded templates, text requirements."""

import pytest
import torch

from letter_fast.data import Dataset
from letter_fast.genrec.lcrec.examples import build_examples
from letter_fast.genrec.lcrec.templates import PROMPT_FRAME, TASKS, expand_tasks, load_templates
from letter_fast.genrec.lcrec.testing import tiny_codes, tiny_dataset
from letter_fast.genrec.lcrec.tokens import item_string


def _one_user(n=25, with_text=True):
    items = [{"title": f"T{i}", "description": f"D{i}", "brand": "", "categories": ""} for i in range(n)] \
        if with_text else None
    return Dataset("One", [list(range(n))], n, items=items), tiny_codes(n, 2, 8)


def test_shipped_templates_cover_every_task_with_several_phrasings():
    t = load_templates()
    assert set(t) == set(TASKS)
    assert all(len(t[task]) >= 3 for task in TASKS)
    assert expand_tasks("seqrec,fusionseqrec") == ("seqrec", "fusion_title", "fusion_index")
    with pytest.raises(ValueError, match="unknown LC-Rec task"):
        expand_tasks(["nope"])


def test_protocol_train_prefixes_valid_test_and_history_cap():
    data, codes = _one_user(25)
    train = build_examples(data, codes, "train", "seqrec", template_ids=0)
    assert train.target.tolist() == list(range(1, 23))  # every prefix of items[:-2]
    valid = build_examples(data, codes, "valid", "seqrec")
    test = build_examples(data, codes, "test", "seqrec")
    assert valid.target.tolist() == [23] and test.target.tolist() == [24]
    template = load_templates()["seqrec"][0]
    history = ", ".join(item_string(codes[i]) for i in range(4, 24))  # the last 20, oldest first
    assert test.prompt[0] == PROMPT_FRAME.format(instruction=template["instruction"].format(history=history))
    assert test.prompt[0].endswith("### Response:") and test.response[0] == item_string(codes[24])


def test_train_templates_are_random_and_seeded_eval_templates_fixed_or_listed():
    data = tiny_dataset(num_users=8)
    codes = tiny_codes(data.num_items)
    a = build_examples(data, codes, "train", "seqrec", seed=1)
    b = build_examples(data, codes, "train", "seqrec", seed=1)
    c = build_examples(data, codes, "train", "seqrec", seed=2)
    assert a.prompt == b.prompt and torch.equal(a.template, b.template)
    assert not torch.equal(a.template, c.template) and a.template.unique().numel() > 1
    test = build_examples(data, codes, "test", "seqrec", template_ids=[0, 2])
    single = build_examples(data, codes, "test", "seqrec")
    assert len(test) == 2 * len(single) and test.template.tolist()[:4] == [0, 2, 0, 2]
    assert test.prompt[0] == single.prompt[0]
    with pytest.raises(ValueError, match="out of range"):
        build_examples(data, codes, "test", "seqrec", template_ids=99)


def test_text_tasks():
    data, codes = _one_user(6)
    ex = build_examples(data, codes, "train", ["item2index", "index2item", "fusionseqrec"], template_ids=0)
    counts = ex.counts()
    assert counts == {"item2index": 6, "index2item": 6, "fusion_title": 3, "fusion_index": 3}
    i2i = ex[[0]]
    assert i2i.response == [item_string(codes[0])] and "T0" in i2i.prompt[0] and int(i2i.user) == -1
    fusion_index = ex[[len(ex) - 1]]
    assert '"T0", "T1", "T2"' in fusion_index.prompt[0] and fusion_index.response == [item_string(codes[3])]
    fusion_title = ex[[12]]
    assert fusion_title.task == ["fusion_title"] and fusion_title.response == ["T1"]


def test_text_tasks_need_item_text_and_item_tasks_are_training_only():
    data, codes = _one_user(6, with_text=False)
    assert len(build_examples(data, codes, "train", "seqrec")) == 3
    with pytest.raises(ValueError, match="need item text"):
        build_examples(data, codes, "train", "item2index")
    data, codes = _one_user(6)
    with pytest.raises(ValueError, match="training tasks"):
        build_examples(data, codes, "test", "index2item")
    with pytest.raises(ValueError, match="no item codes"):
        build_examples(data, None, "train", "seqrec")
