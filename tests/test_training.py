import pytest
import torch
from torch.utils.data import TensorDataset

from helpers import data, models, placement, training


def _toy_loaders(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(96, 1, 28, 28, generator=g), torch.randint(0, 4, (96,), generator=g)
    train = data.loader(TensorDataset(x[:64], y[:64]), 16, shuffle=True, seed=seed)
    val = data.loader(TensorDataset(x[64:], y[64:]), 16)
    return train, val


def _fresh_model(seed):
    training.seed_everything(seed)
    return models.create("lenet5", 4, 1, 28)


class _Interrupt(Exception):
    pass


class _StopAfter:
    """A loader that breaks off during epoch ``n`` (1-based), like a killed process."""

    def __init__(self, inner, n):
        self.inner, self.n, self.epoch = inner, n, 0
        self.generator = inner.generator

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        self.epoch += 1
        for i, batch in enumerate(self.inner):
            if self.epoch == self.n and i == 1:
                raise _Interrupt()
            yield batch


def test_interrupted_fit_resumes_to_the_same_weights(tmp_path):
    train, val = _toy_loaders()
    reference = _fresh_model(1)
    training.fit(reference, train, val, 3, torch.device("cpu"), lr=0.05, checkpoint=tmp_path / "ref.pt",
                 progress=False, log=lambda m: None)

    interrupted = _fresh_model(1)
    with pytest.raises(_Interrupt):
        training.fit(interrupted, _StopAfter(train, 2), val, 3, torch.device("cpu"), lr=0.05,
                     checkpoint=tmp_path / "run.pt", progress=False, log=lambda m: None)
    saved = torch.load(tmp_path / "run.pt", weights_only=True)
    assert saved["epoch"] == 1

    resumed = _fresh_model(99)  # a different init: everything must come from the checkpoint
    messages = []
    history = training.fit(resumed, train, val, 3, torch.device("cpu"), lr=0.05,
                           checkpoint=tmp_path / "run.pt", progress=False, log=messages.append)
    assert "resumed" in messages[0]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_evaluate_topk_by_hand():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    targets = torch.tensor([0, 1, 1])
    assert training.topk_correct(logits, targets, ks=(1, 2)) == [1, 3]


def test_fit_learns_something_and_rejects_bad_epochs():
    train, val = _toy_loaders()
    model = _fresh_model(0)
    history = training.fit(model, train, None, 8, torch.device("cpu"), lr=0.05, progress=False,
                           log=lambda m: None)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    with pytest.raises(ValueError, match="epochs"):
        training.fit(model, train, None, -1, torch.device("cpu"))


def test_checkpoint_is_written_atomically(tmp_path, monkeypatch):
    from helpers import io

    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"old")
    monkeypatch.setattr(io.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        io.atomic_torch_save({"a": torch.ones(2)}, target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_bf16_precision_autocasts_on_cpu_and_auto_stays_fp32():
    train, val = _toy_loaders()
    model = _fresh_model(0)
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    history = training.fit(model, train, val, 1, torch.device("cpu"), lr=0.05, precision="bf16",
                           progress=False, log=lambda m: None)
    assert set(seen) == {torch.bfloat16} and len(history) == 1
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a bf16 model
    seen.clear()
    training.fit(model, train, None, 1, torch.device("cpu"), precision="auto", progress=False, log=lambda m: None)
    assert set(seen) == {torch.float32}
    with pytest.raises(ValueError, match="CUDA"):
        training.fit(model, train, None, 1, torch.device("cpu"), precision="fp16")


@pytest.fixture
def channels_last():
    placement.set_channels_last(True)
    yield
    placement.set_channels_last(False)


def test_channels_last_batches_reach_the_model_and_train_to_the_same_weights(channels_last):
    layouts = []
    model = _fresh_model(0)
    # one channel: channels-last is told apart by its strides, the channel's being 1 (NHWC)
    model.register_forward_pre_hook(lambda module, args: layouts.append(args[0].stride(1) == 1))
    train, val = _toy_loaders()
    history = training.fit(model, train, val, 2, torch.device("cpu"), lr=0.05, progress=False, log=lambda m: None)
    assert layouts and all(layouts)  # every training and validation batch
    placement.set_channels_last(False)
    reference = _fresh_model(0)
    reference_history = training.fit(reference, *_toy_loaders(), 2, torch.device("cpu"), lr=0.05, progress=False,
                                     log=lambda m: None)
    for got, want in zip(model.state_dict().values(), reference.state_dict().values()):
        assert got.is_contiguous()  # weights and checkpoints keep their layout
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)  # the same training, other summation order
    assert history[-1]["val_top1"] == reference_history[-1]["val_top1"]


def test_channels_last_leaves_other_inputs_alone(channels_last):
    assert placement.to_device(torch.zeros(4, 10), "cpu").shape == (4, 10)
    assert placement.to_device(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "cpu").is_contiguous()
    assert placement.to_device(torch.zeros(2, 3, 4, 4), "cpu").stride() == (48, 1, 12, 3)
    with pytest.raises(ValueError, match="True or False"):
        placement.set_channels_last("yes")
