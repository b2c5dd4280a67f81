"""Our PyTorch TaH forward (tah_model.py) against the reference's outputs in
shared/fixtures/tah-tiny (a qwen3 checkpoint in the reference layout).

    TAH_FIXTURES=/path/to/fixtures pytest models/train/test_fixture.py
"""
import json
import os

import pytest

# Plain imports: a missing torch is a failure, not a skip (CI runs this).
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import tah_model as tm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def fixture_dir():
    cands = [os.environ.get("TAH_FIXTURES", ""),
             os.path.join(HERE, "..", "..", "..", "shared", "fixtures"),
             "/work/shared/fixtures"]
    for c in cands:
        d = os.path.join(c, "tah-tiny")
        if c and os.path.exists(os.path.join(d, "reference.safetensors")):
            return d
    pytest.fail("fixtures/tah-tiny not found (set TAH_FIXTURES)")


@pytest.fixture(scope="module")
def loaded():
    torch.set_num_threads(1)
    d = fixture_dir()
    base, dec, tcfg = tm.load_tah(d)
    ref = load_file(os.path.join(d, "reference.safetensors"))
    with open(os.path.join(d, "reference.json")) as f:
        meta = json.load(f)
    return base, dec, tcfg, ref, meta


def test_prefill_matches_reference(loaded):
    base, dec, tcfg, ref, meta = loaded
    ids = torch.tensor([meta["prefill_input_ids"]])
    with torch.no_grad():
        out = tm.tah_forward(base, ids, decider=dec,
                             input_topk=tcfg["input_updater_kwargs"]["topk"])
    iters = (1 + out["hard"].long())[0]
    assert iters.tolist() == ref["prefill_iter_count"].tolist()
    assert iters.tolist() == meta["prefill_iter_count"]
    diff = (out["logits"][0] - ref["prefill_logits"]).abs().max().item()
    assert diff < 5e-4, diff
    # intermediate quantities, for diagnosis
    assert (out["logits1"][0] - ref["base_prefill_logits"]).abs().max().item() < 5e-4
    assert (out["prob"][0] - ref["prefill_decider_prob"]).abs().max().item() < 1e-5


def test_oracle_mask_equals_decider_path(loaded):
    """Forcing the decider's own choice as the oracle mask gives the same logits."""
    base, dec, tcfg, ref, meta = loaded
    ids = torch.tensor([meta["prefill_input_ids"]])
    hard = (ref["prefill_iter_count"] == 2)[None]
    with torch.no_grad():
        out = tm.tah_forward(base, ids, hard=hard, input_topk=tcfg["input_updater_kwargs"]["topk"])
    assert (out["logits"][0] - ref["prefill_logits"]).abs().max().item() < 5e-4


def test_batched_padding_equals_single(loaded):
    """A right-padded batch gives each row's single-sequence result."""
    base, dec, tcfg, ref, meta = loaded
    ids = torch.tensor([meta["prefill_input_ids"]])
    k = tcfg["input_updater_kwargs"]["topk"]
    short = ids[:, :15]
    batch = torch.zeros(2, 24, dtype=torch.long)
    batch[0] = ids[0]
    batch[1, :15] = short[0]
    valid = torch.zeros(2, 24, dtype=torch.bool)
    valid[0] = True
    valid[1, :15] = True
    with torch.no_grad():
        ob = tm.tah_forward(base, batch, valid=valid, decider=dec, input_topk=k)
        os_ = tm.tah_forward(base, short, decider=dec, input_topk=k)
    assert (ob["logits"][0] - ref["prefill_logits"]).abs().max().item() < 5e-4
    assert (ob["logits"][1, :15] - os_["logits"][0]).abs().max().item() < 5e-4
    assert ob["hard"][1, :15].tolist() == os_["hard"][0].tolist()


def test_decider_roundtrip(tmp_path, loaded):
    """save_decider writes what load_tah reads back (and what tah-convert expects)."""
    base, dec, tcfg, ref, meta = loaded
    p = tmp_path / "iter_decider.bin"
    tm.save_decider(dec, str(p))
    blob = torch.load(str(p), weights_only=True)
    assert blob["class"] == "MLPIterDecider"
    assert type(blob["state_dict"]) is dict
    assert list(blob["state_dict"])[0] == "threshold"
    assert blob["init_args"]["dtype"] is torch.float32
    for k, v in dec.state_dict().items():
        assert torch.equal(blob["state_dict"][k], v)
