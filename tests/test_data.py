import gzip
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import data


def test_scan_reports_exactly_the_bad_files_and_loads_the_rest(messy_folder):
    scan = data.scan_folder(messy_folder)
    assert sorted(rel for rel, _ in scan["skipped"]) == ["b/empty.jpg", "b/notes.jpg", "b/truncated.jpg"]
    assert scan["classes"] == ["a class", "b"]
    assert len(scan["items"]) == 11
    ds = data.ImageListDataset(messy_folder, scan["items"], data.make_transforms(16, data.IMAGENET_MEAN,
                                                                                 data.IMAGENET_STD, True))
    batches = list(torch.utils.data.DataLoader(ds, batch_size=4))  # a whole epoch, nothing raises
    assert sum(len(y) for _, y in batches) == 11
    assert all(x.shape[1:] == (3, 16, 16) for x, _ in batches)


def test_load_splits_on_a_messy_folder_reports_skipped(messy_folder, tmp_path):
    splits = data.load_splits("folder", messy_folder, image_size=16, split_file=tmp_path / "split.json")
    assert len(splits.info["skipped"]) == 3
    assert sum(splits.info["sizes"].values()) == 11
    assert (tmp_path / "split.json").exists()


def test_duplicates_are_dropped_before_splitting(messy_folder):
    (messy_folder / "b/copy_of_a.jpg").write_bytes((messy_folder / "a class/good0.jpg").read_bytes())
    scan = data.scan_folder(messy_folder)
    assert scan["duplicates"] == [["b/copy_of_a.jpg", "a class/good0.jpg"]]
    assert len({rel for rel, _ in scan["items"]}) == len(scan["items"]) == 11


def test_stratified_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(5), [100, 60, 40, 20, 200])
    train, val, test = data.stratified_split(labels, seed=3)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert len(train) + len(val) + len(test) == len(labels)
    for part, fraction in ((train, 0.70), (val, 0.15), (test, 0.15)):
        counts = Counter(labels[part])
        for label, total in Counter(labels).items():
            assert abs(counts[label] - fraction * total) <= 1
    assert data.stratified_split(labels, seed=3) == (train, val, test)
    assert data.stratified_split(labels, seed=4) != (train, val, test)


def test_split_file_is_reused_and_guards_against_another_seed(messy_folder, tmp_path):
    split_file = tmp_path / "split.json"
    first = data.folder_split(messy_folder, split_file, seed=0)
    assert data.folder_split(messy_folder, split_file, seed=0) == first
    with pytest.raises(ValueError, match="seed"):
        data.folder_split(messy_folder, split_file, seed=1)


def test_bad_split_fractions_are_rejected():
    with pytest.raises(ValueError, match="sum"):
        data.stratified_split([0, 1], (0.5, 0.5, 0.5))


def test_take_per_class_is_a_stratified_cap():
    labels = np.repeat(np.arange(3), [10, 5, 1])
    keep = data.take_per_class(range(len(labels)), labels, 2, seed=0)
    assert Counter(labels[keep]) == {0: 2, 1: 2, 2: 1}


def test_missing_sea_animals_gives_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(data.SEA_ANIMALS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(data.DatasetNotFoundError, match="kagglehub") as err:
        data.load_splits("sea-animals", download=False)
    assert "data/sea-animals" in str(err.value) and "--data-dir" in str(err.value)
    with pytest.raises(data.DatasetNotFoundError, match="does not exist"):
        data.load_splits("sea-animals", tmp_path / "nowhere")


def test_env_variable_locates_the_folder(messy_folder, monkeypatch):
    monkeypatch.setenv(data.SEA_ANIMALS_ENV, str(messy_folder))
    assert data.resolve_sea_animals_dir(None, download=False) == messy_folder


def _write_idx(path, array, compress):
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open(str(path) + ".gz", "wb").write(raw) if compress else path.write_bytes(raw))


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_style_idx_folder(tmp_path, compress):
    rng = np.random.default_rng(0)
    for part, n in (("train", 120), ("t10k", 30)):
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)), compress)
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte", np.arange(n) % 10, compress)
    splits = data.load_splits("fashion-mnist", tmp_path, image_size=28)
    assert splits.info["sizes"] == {"train": 110, "val": 10, "test": 30}
    assert splits.in_channels == 1 and splits.class_names[0] == "T-shirt/top"
    x, y = splits.test[0]
    assert x.shape == (1, 28, 28) and y == 0


def test_corrupt_idx_file_is_rejected(tmp_path):
    (tmp_path / "bad").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="holds"):
        data.read_idx(tmp_path / "bad")


def test_digits_offline_and_unknown_dataset():
    splits = data.load_splits("digits", image_size=8, per_class={"train": 5})
    assert splits.info["sizes"]["train"] == 50 and splits.in_channels == 1
    assert splits.train[0][0].shape == (1, 8, 8)
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.load_splits("imagenet")


def test_cached_images_give_the_same_tensors_as_uncached(messy_folder, tmp_path):
    kwargs = dict(image_size=12, split_file=tmp_path / "split.json", augment=False)
    plain = data.load_splits("folder", messy_folder, **kwargs)
    cached = data.load_splits("folder", messy_folder, cache_images=True, **kwargs)
    for part in ("train", "val", "test"):
        a, b = getattr(plain, part), getattr(cached, part)
        for i in range(len(a)):
            assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][0], b[i][0])  # second read: from cache


def test_evaluation_slice_is_a_fixed_random_sample_across_classes():
    from helpers.data import evaluation_slice

    labels = torch.arange(10).repeat_interleave(50)  # stored class by class, like the splits
    dataset = torch.utils.data.TensorDataset(torch.zeros(500, 1), labels)
    part = evaluation_slice(dataset, 100, seed=3)
    assert len(part) == 100 and part.indices == sorted(set(part.indices))
    assert part.indices == evaluation_slice(dataset, 100, seed=3).indices
    assert part.indices != evaluation_slice(dataset, 100, seed=4).indices
    assert len(set(labels[part.indices].tolist())) == 10  # the first 100 items would hold 2 classes
    assert evaluation_slice(dataset, None) is dataset and evaluation_slice(dataset, 900) is dataset
    with pytest.raises(ValueError, match="positive integer"):
        evaluation_slice(dataset, 0)


def test_a_folder_holding_one_folder_of_class_folders_is_refused_with_the_path_to_pass(messy_folder, tmp_path):
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    messy_folder.rename(wrapper / "Sea Animals")
    with pytest.raises(data.DatasetError, match=r"single folder, Sea Animals, .* pass .*wrapper/Sea Animals"):
        data.load_splits("folder", wrapper, image_size=16)
    assert data.unwrap_single_folder(wrapper) == wrapper / "Sea Animals"  # the download's case
    assert data.unwrap_single_folder(wrapper / "Sea Animals") == wrapper / "Sea Animals"


def test_one_class_or_too_few_images_per_class_is_refused_naming_them(messy_folder, tmp_path):
    assert data.smallest_class_size() == 4
    (messy_folder / "b" / "good3.jpg").unlink()
    with pytest.raises(data.DatasetError, match=r"fewer than the 4 usable images .*: b \(3\)"):
        data.load_splits("folder", messy_folder, image_size=16, split_file=tmp_path / "split.json")
    assert not (tmp_path / "split.json").exists()
    one = tmp_path / "one"
    one.mkdir()
    (messy_folder / "a class").rename(one / "a class")
    with pytest.raises(data.DatasetError, match="only one class folder"):
        data.load_splits("folder", one, image_size=16)


def test_symlink_loops_dangling_links_and_linked_folders_are_listed(messy_folder):
    (messy_folder / "b" / "loop.jpg").symlink_to(messy_folder / "b" / "loop.jpg")
    (messy_folder / "b" / "gone.jpg").symlink_to(messy_folder / "nowhere.jpg")
    (messy_folder / "b" / "linked").symlink_to(messy_folder / "a class")
    (messy_folder / "c").symlink_to(messy_folder / "c")
    (messy_folder / "a class" / "alias.jpg").symlink_to(messy_folder / "a class" / "good0.jpg")
    scan = data.scan_folder(messy_folder)
    reasons = dict(map(tuple, scan["skipped"]))
    assert reasons["b/loop.jpg"] == reasons["b/gone.jpg"] == reasons["c"] == "symlink loop or dangling symlink"
    assert reasons["b/linked"] == "symlinked folder, not followed"
    assert scan["classes"] == ["a class", "b"]
    assert ["a class/good0.jpg", "a class/alias.jpg"] in scan["duplicates"] or \
        ["a class/alias.jpg", "a class/good0.jpg"] in scan["duplicates"]  # a linked file is read once


@pytest.mark.parametrize("image_size", [8, 16])
def test_prepared_in_memory_images_equal_the_pil_pipeline_draw_for_draw(image_size):
    splits = data.load_splits("digits", image_size=image_size, per_class={"train": 5, "test": 3})
    for part, train in ((splits.train, True), (splits.test, False)):
        reference = data.make_transforms(image_size, splits.mean, splits.std, train)
        torch.manual_seed(7)
        fast = torch.stack([part[i][0] for i in range(len(part))])
        torch.manual_seed(7)
        slow = torch.stack([reference(Image.fromarray(part.images[i])) for i in range(len(part))])
        assert fast.shape == (len(part), 1, image_size, image_size)
        torch.testing.assert_close(fast, slow, rtol=0, atol=1e-6)
    splits.train.transform = None  # notebook 01 shows the images as stored
    assert isinstance(splits.train[0][0], Image.Image)


def test_digits_read_from_the_bundled_file_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    images, labels = data.digits_arrays()
    bunch = load_digits()
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8)
    np.testing.assert_array_equal(images, (bunch.images * (255 / 16)).round().astype(np.uint8))
    np.testing.assert_array_equal(labels, bunch.target)
