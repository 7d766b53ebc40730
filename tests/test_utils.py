"""Tests of the data path, the training loop, saving, predicting and the plots."""
import json
import math
from dataclasses import asdict
from dataclasses import replace

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

matplotlib.use("Agg")

import utils  # noqa: E402
from model import Net, count_parameters, kaiming_init  # noqa: E402
from utils import (Augmentation, History, Recipe, TensorLoader, augment_batch, confusion_matrix,  # noqa: E402
                   fit, load_model, mnist_tensors, normalize, per_class_accuracy, predict, save_model, train,
                   train_transforms)


@pytest.fixture(scope="module")
def mnist_train():
    return mnist_tensors(train=True)


def synthetic_digits(n=256, seed=0):
    """Images whose class is where a bright square sits: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=generator)
    images = torch.randint(0, 30, (n, 1, 28, 28), generator=generator, dtype=torch.uint8)
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 5)
        image[0, 4 + 10 * row:12 + 10 * row, 2 + 5 * col:6 + 5 * col] = 255
    return images, labels


def small_recipe(**changes) -> Recipe:
    """The notebook's recipe for a small Net on the tiny sets below: width 4, batches of 32, no augmentation,
    a few epochs, in float32."""
    return Recipe(**{"width": 4, "epochs": 2, "batch_size": 32, "augmentation": None, "precision": "float32",
                     **changes})


def fit_on(images, labels, recipe: Recipe, model=None) -> History:
    """Fit a small Net (or `model`) on these images with `recipe`, scoring it on the same images."""
    return fit(model if model is not None else Net(n_channels=4), recipe, images, labels, images, labels,
               verbose=False)


# ------------------------------------------------------------------------------------------- data

def test_data_dir_argument_then_environment_then_shared(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_DATA_DIR", "/from/env")
    assert utils.resolve_data_dir(tmp_path) == (tmp_path, False)
    assert utils.resolve_data_dir() == (utils.Path("/from/env"), False)
    monkeypatch.delenv("MNIST_DATA_DIR")
    monkeypatch.setattr(utils, "SHARED_MNIST", tmp_path)
    assert utils.resolve_data_dir() == (tmp_path, False)
    monkeypatch.setattr(utils, "SHARED_MNIST", tmp_path / "missing")
    assert utils.resolve_data_dir() == (utils.Path("data"), True)


def test_missing_data_gives_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST_DATA_DIR"):
        utils.load_mnist(train=False, data_dir=tmp_path)


def copy_of_mnist_test_set(folder, cut_images: bool = False, label_255: bool = False):
    """MNIST's two test files copied into `folder` as torchvision lays them out, optionally damaged."""
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    source = utils.resolve_data_dir()[0] / "MNIST" / "raw"
    images = (source / "t10k-images-idx3-ubyte").read_bytes()
    labels = bytearray((source / "t10k-labels-idx1-ubyte").read_bytes())
    if label_255:
        labels[8 + 17] = 255
    (raw / "t10k-images-idx3-ubyte").write_bytes(images[:-1000] if cut_images else images)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):  # torchvision looks for all four
        (raw / name).symlink_to(source / name)
    return folder


def test_a_corrupt_mnist_file_is_named_as_corrupt_with_the_size_expected(tmp_path):
    folder = copy_of_mnist_test_set(tmp_path, cut_images=True)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte is corrupt: 7,839,016 bytes, expected 7,840,016"):
        utils.mnist_tensors(train=False, data_dir=folder)


def test_labels_outside_the_ten_digits_are_refused_when_loading(tmp_path):
    folder = copy_of_mnist_test_set(tmp_path, label_255=True)
    with pytest.raises(ValueError, match="labels .* run from 0 to 255; MNIST's labels are the digits 0 to 9"):
        utils.mnist_tensors(train=False, data_dir=folder)


def test_mnist_tensors_are_the_whole_split_as_uint8(mnist_train):
    images, labels = mnist_train
    assert images.shape == (60_000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60_000,) and set(labels.unique().tolist()) == set(range(10))


def test_test_transform_normalises_with_mnist_statistics():
    image = Image.fromarray(torch.full((28, 28), 255, dtype=torch.uint8).numpy())
    tensor = utils.test_transforms()(image)
    assert tensor.shape == (1, 28, 28)
    assert torch.allclose(tensor, torch.full_like(tensor, (1 - utils.MNIST_MEAN) / utils.MNIST_STD))
    assert torch.allclose(normalize(torch.full((1, 1, 28, 28), 255, dtype=torch.uint8)), tensor[None])


def test_train_transform_is_random_and_keeps_shape():
    image = Image.fromarray(synthetic_digits(1)[0][0, 0].numpy())
    torch.manual_seed(0)
    views = [train_transforms()(image) for _ in range(4)]
    assert all(v.shape == (1, 28, 28) for v in views)
    assert not torch.equal(views[0], views[1])


def test_augment_batch_with_zero_ranges_is_the_identity():
    images = synthetic_digits(8)[0].float() / 255
    same = augment_batch(images, Augmentation(max_degrees=0, max_shift=0, max_zoom=0))
    assert torch.allclose(same, images, atol=1e-5)


def test_augment_batch_draws_its_own_transform_for_each_image():
    image = synthetic_digits(1)[0].float() / 255
    views = augment_batch(image.repeat(16, 1, 1, 1), Augmentation(max_degrees=15, max_shift=0.1, max_zoom=0.1))
    assert views.shape == (16, 1, 28, 28)
    assert 0 <= views.min() and views.max() <= 1 + 1e-6
    assert len({tuple(v.flatten()[::7].tolist()) for v in views}) == 16


def centre_offsets(moved: torch.Tensor) -> torch.Tensor:
    """How far the centre of mass of each image of a batch lies from the image's centre, in pixels (x, y)."""
    coordinates = torch.arange(28.0)
    mass = moved.sum((1, 2, 3))
    return torch.stack([(moved.sum((1, 2)) * coordinates).sum(1) / mass,
                        (moved.sum((1, 3)) * coordinates).sum(1) / mass], 1) - 13.5


def test_augment_batch_shifts_by_up_to_the_requested_fraction_and_carries_it_through_rotation_and_zoom():
    # A centred blob: rotation and zoom about the centre leave its centre of mass in place, the shift moves it.
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 12:16, 12:16] = 1.0
    generator = torch.Generator().manual_seed(0)
    shifted = centre_offsets(augment_batch(image.repeat(4_000, 1, 1, 1),
                                           Augmentation(max_degrees=0, max_shift=3 / 28, max_zoom=0), generator))
    assert 2.8 < float(shifted.abs().max()) <= 3.0 + 1e-3  # up to the requested 3 pixels, never past them
    assert float(shifted.mean(0).abs().max()) < 0.1  # in both directions alike
    # The recipe's augmentation: its shift turned by the rotation and scaled by the zoom reaches past 10%.
    reach = float(centre_offsets(augment_batch(image.repeat(20_000, 1, 1, 1), generator=generator))[:, 0].abs().max()) / 28
    bound = 1.1 * (math.cos(math.radians(10)) + math.sin(math.radians(10))) * 0.1
    assert 0.105 < reach <= bound + 0.002  # beyond RandomAffine's 10%, within 12.7%


def test_elastic_displacement_is_smooth_centred_and_scaled_by_alpha():
    torch.manual_seed(0)
    field = utils.elastic_displacement(500, 28, alpha=34.0, sigma=4.0, device=torch.device("cpu"))
    assert field.shape == (500, 28, 28, 2)
    assert abs(float(field.mean())) < 0.1 and 1.0 < float(field.std()) < 3.0  # a pixel or two, either way
    # Smooth: neighbouring pixels move almost alike, far more alike than independent noise would.
    neighbours = torch.corrcoef(torch.stack([field[:, :, :-1].flatten(), field[:, :, 1:].flatten()]))[0, 1]
    assert float(neighbours) > 0.9
    torch.manual_seed(0)
    doubled = utils.elastic_displacement(500, 28, alpha=68.0, sigma=4.0, device=torch.device("cpu"))
    assert torch.allclose(doubled, 2 * field)


def test_augment_batch_distorts_elastically_only_when_asked():
    images = synthetic_digits(8)[0].float() / 255
    plain = Augmentation(max_degrees=0, max_shift=0, max_zoom=0)
    torch.manual_seed(0)
    distorted = augment_batch(images, replace(plain, elastic_alpha=34.0))
    assert not torch.allclose(distorted, images, atol=1e-3)
    assert 0 <= float(distorted.min()) and float(distorted.max()) <= 1 + 1e-6
    # No elastic field, no random draw for one: the affine part alone is the identity here.
    assert torch.allclose(augment_batch(images, plain), images, atol=1e-5)


def test_tensor_loader_visits_every_image_once_per_epoch():
    images, labels = synthetic_digits(100)
    loader = TensorLoader(images, torch.arange(100), batch_size=32, shuffle=True)
    assert len(loader) == 4
    seen = torch.cat([batch_labels for _, batch_labels in loader])
    assert sorted(seen.tolist()) == list(range(100))
    first_batch, _ = next(iter(loader))
    assert first_batch.dtype == torch.float32 and first_batch.shape == (32, 1, 28, 28)


def test_on_the_cpu_batches_and_models_are_channels_last_alike():
    images, labels = synthetic_digits(8)
    batch, _ = next(iter(TensorLoader(images, labels, 8)))
    assert batch.is_contiguous(memory_format=torch.channels_last)
    weight = utils.on_device(Net(n_channels=2), "cpu").features[2][0].weight  # a 3x3 convolution, several inputs
    assert weight.is_contiguous(memory_format=torch.channels_last) and weight.device == images.device


def test_a_loader_with_its_own_generator_ignores_every_other_random_draw():
    images, labels = synthetic_digits(64)

    def batches(extra_draws: bool):
        loader = TensorLoader(images, labels, 16, shuffle=True, augmentation=Augmentation(),
                              generator=utils.run_generator(7, "cpu"))
        out = []
        for batch, batch_labels in loader:
            if extra_draws:
                torch.rand(100)  # someone else's random numbers, between batches
            out.append((batch, batch_labels))
        return out

    assert all(torch.equal(a, b) and torch.equal(la, lb)
               for (a, la), (b, lb) in zip(batches(False), batches(True), strict=True))


@pytest.mark.parametrize("kwargs, message", [
    (dict(images=torch.zeros(4, 1, 28, 28)), "uint8"),
    (dict(labels=torch.zeros(3, dtype=torch.long)), "labels"),
    (dict(batch_size=0), "batch_size"),
])
def test_tensor_loader_rejects_bad_input(kwargs, message):
    args = dict(images=torch.zeros(4, 1, 28, 28, dtype=torch.uint8), labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=message):
        TensorLoader(**{**args, **kwargs})


# ---------------------------------------------------------------------------------------- training

def test_train_lowers_the_loss_and_test_reports_metrics():
    torch.manual_seed(0)
    images, labels = synthetic_digits(256)
    loader = TensorLoader(images, labels, batch_size=32, shuffle=True)
    model = Net(n_channels=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = [train(model, loader, optimizer)[0] for _ in range(6)]
    assert losses[-1] < losses[0] * 0.5
    test_loss, test_acc = utils.test(model, TensorLoader(images, labels, batch_size=64))
    assert 0 <= test_loss < losses[0] and 50 < test_acc <= 100


def test_empty_loader_is_an_error():
    with pytest.raises(ValueError, match="no batches"):
        utils.test(Net(n_channels=4), [])


def test_fit_records_one_row_per_epoch_and_the_whole_resolved_recipe():
    images, labels = synthetic_digits(64)
    first = fit_on(images, labels, small_recipe(epochs=2, seed=5, precision="auto"))
    assert first.epochs == 2 and len(first.train_loss) == len(first.epoch_seconds) == 2
    assert first.parameters == sum(p.numel() for p in Net(n_channels=4).parameters())
    assert first.recipe == small_recipe(epochs=2, seed=5, precision=utils.pick_precision(torch.device("cpu"))[0])
    assert (first.recipe.network, first.recipe.width) == ("Net", 4) and first.device.startswith("CPU")


@pytest.mark.parametrize("changes, message", [
    (dict(epochs=0), "epochs must be at least 1"), (dict(epochs=2.5), "epochs must be a whole number"),
    (dict(epochs=True), "epochs must be a whole number"), (dict(schedule="cosine"), "schedule must be one of"),
    (dict(optimizer="rmsprop"), "optimizer must be one of"), (dict(clean_final_epochs=-1), "clean_final_epochs"),
    (dict(batch_size=0), "batch_size"), (dict(ema_decay=1.0), "ema_decay"), (dict(precision="float16"), "precision"),
    (dict(max_lr=0), "a learning rate of 0 trains nothing"), (dict(max_lr=float("nan")), "max_lr must be a finite"),
    (dict(max_lr=-0.1), "max_lr must be in"), (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(network="Nett"), "network must be one of"), (dict(width=True), "width must be a whole number"),
    (dict(width=0), "width must be at least 1"), (dict(network="PublicSmallNet", width=8), "one fixed width"),
    (dict(dropout=1.0), "dropout must be in"), (dict(seed=-1), "seed must be at least 0"),
    (dict(label_smoothing=1.5), "label_smoothing"), (dict(augmentation="yes"), "augmentation must be"),
])
def test_a_recipe_refuses_settings_that_cannot_work(changes, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**changes)


@pytest.mark.parametrize("changes, message", [
    (dict(max_zoom=1.5), "max_zoom must be in \\[0, 1\\)"), (dict(max_shift=0.6), "max_shift"),
    (dict(max_degrees=-5), "max_degrees"), (dict(elastic_alpha=float("inf")), "elastic_alpha"),
    (dict(elastic_sigma=0), "elastic_sigma"),
])
def test_an_augmentation_refuses_ranges_that_would_not_keep_the_digit(changes, message):
    with pytest.raises(ValueError, match=message):
        Augmentation(**changes)


def test_a_recipe_takes_any_whole_number_and_writes_out_as_plain_json():
    recipe = Recipe(width=np.int64(6), epochs=np.int32(3), seed=np.int64(2), max_lr=np.float64(0.05))
    assert (recipe.width, recipe.epochs, recipe.seed) == (6, 3, 2) and type(recipe.width) is int
    assert Recipe.from_dict(json.loads(json.dumps(asdict(recipe)))) == recipe
    assert Recipe().width == 8 and Recipe(network="PublicSmallNet").width is None  # each network's own width
    assert Recipe().resolved(torch.device("cuda")).precision == "float32"


def test_fit_follows_the_recipes_schedule_optimizer_label_smoothing_batches_and_precision(monkeypatch):
    images, labels = synthetic_digits(96)
    steps = []
    real_step = utils.training_step

    def spy(model, batch, batch_labels, optimizer, precision="float32", label_smoothing=0.0):
        steps.append((type(optimizer).__name__, optimizer.param_groups[0]["lr"], label_smoothing, len(batch),
                      precision))
        return real_step(model, batch, batch_labels, optimizer, precision, label_smoothing)

    monkeypatch.setattr(utils, "training_step", spy)
    recipes = (small_recipe(epochs=3),
               small_recipe(epochs=3, schedule="step", step_epochs=1, optimizer="adam", max_lr=0.01,
                            label_smoothing=0.1, batch_size=40, precision="bfloat16"))
    for recipe in recipes:
        steps.clear()
        fit_on(images, labels, recipe)
        per_epoch = math.ceil(96 / recipe.batch_size)
        rates, _ = utils.schedule_trace(recipe, per_epoch)
        assert [step[1] for step in steps] == pytest.approx(rates)  # the learning rate of every step
        assert {step[0] for step in steps} == {"SGD" if recipe.optimizer == "sgd" else "Adam"}
        assert {(step[2], step[4]) for step in steps} == {(recipe.label_smoothing, recipe.precision)}
        assert [step[3] for step in steps[:per_epoch]] == [min(recipe.batch_size, 96 - i * recipe.batch_size)
                                                             for i in range(per_epoch)]


def test_fit_stops_with_a_clear_error_when_the_loss_is_no_longer_a_number():
    images, labels = synthetic_digits(64)
    recipe = small_recipe(network="Net-no-bn", max_lr=1e6)  # without BatchNorm such a rate overflows at once
    with pytest.raises(FloatingPointError, match="became nan in epoch 2: the run diverged. Try a lower max_lr than 1e\\+06"):
        fit_on(images, labels, recipe, model=utils.build_network("Net-no-bn", 4))


def test_train_network_builds_the_recipes_network_and_repeats_with_its_seed_whatever_else_draws(monkeypatch):
    images, labels = synthetic_digits(64)

    def run(seed, draw_elsewhere=False):
        recipe = small_recipe(epochs=2, seed=seed, augmentation=Augmentation())
        if draw_elsewhere:  # someone else draws from torch's global generator at every step of the run
            real_step = utils.training_step
            monkeypatch.setattr(utils, "training_step", lambda *args: (torch.rand(10), real_step(*args))[1])
        try:
            return utils.train_network(recipe, images, labels, images, labels, verbose=False)
        finally:
            monkeypatch.undo()

    (model, first), (_, again), (_, disturbed), (_, other) = run(3), run(3), run(3, draw_elsewhere=True), run(4)
    assert isinstance(model, Net) and model.n_channels == 4 and first.recipe.seed == 3
    assert first.train_loss == again.train_loss == disturbed.train_loss and first.test_acc == disturbed.test_acc
    assert first.train_loss != other.train_loss
    assert model.features[2][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_recomputed_batchnorm_statistics_average_the_first_batches_only():
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(1, momentum=0.3)).eval()
    batches = [(torch.full((4, 1, 2, 2), 1.0) + torch.tensor([0., 2., 0., 2.]).view(4, 1, 1, 1), None),
               (torch.full((4, 1, 2, 2), 3.0) + torch.tensor([0., 2., 0., 2.]).view(4, 1, 1, 1), None),
               (torch.full((4, 1, 2, 2), 1000.0), None)]  # past `batches`: must not count
    utils.recompute_batchnorm_statistics(model, batches, batches=2)
    norm = model[0]
    # Batch means 2 and 4; each batch's unbiased variance is 16/15 (values 1 and 3 or 3 and 5, 8 of each).
    assert torch.allclose(norm.running_mean, torch.tensor([3.0]))
    assert torch.allclose(norm.running_var, torch.tensor([16 / 15]))
    assert norm.momentum == 0.3 and not model.training


def test_recomputing_batchnorm_statistics_changes_no_weight_and_no_training_step():
    images, labels = synthetic_digits(128)

    def run(bn_batches):
        torch.manual_seed(0)
        return fit_on(images, labels, small_recipe(augmentation=Augmentation(), bn_batches=bn_batches))

    without, with_recomputed = run(0), run(2)
    assert without.train_loss == with_recomputed.train_loss  # the same training run, step for step
    assert without.test_loss != with_recomputed.test_loss  # scored with other statistics
    assert with_recomputed.recipe.bn_batches == 2


def test_clean_final_epochs_train_without_augmentation(monkeypatch):
    images, labels = synthetic_digits(64)
    calls = []
    real_augment = utils.augment_batch
    monkeypatch.setattr(utils, "augment_batch", lambda *args: calls.append(1) or real_augment(*args))
    fit_on(images, labels, small_recipe(epochs=3, augmentation=Augmentation(), clean_final_epochs=2))
    assert len(calls) == 2  # one augmented epoch of two batches of 32, then two clean ones


def test_history_round_trips_through_json_and_overwrites_only_a_history(tmp_path):
    history = History(recipe=small_recipe(augmentation=Augmentation(max_degrees=7.0)), device="CPU", parameters=123)
    history.record(0.5, 90.0, 0.4, 91.0, 1.5)
    history.save(tmp_path / "sub" / "history.json")
    history.save(tmp_path / "sub" / "history.json")  # a history of its own: replaced
    assert History.load(tmp_path / "sub" / "history.json") == history
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    with pytest.raises(FileExistsError, match="is not a history saved by History.save: not overwriting it"):
        history.save(notes)
    assert notes.read_text() == '{"my": "notes"}'
    older = tmp_path / "older.json"  # an earlier layout: the network beside the recipe, not in it
    older.write_text(json.dumps({**asdict(history), "network": "Net", "width": 8}))
    with pytest.raises(ValueError, match="is not a history this version of History.save writes .*network"):
        History.load(older)


def test_same_seed_gives_identical_runs_on_a_real_subset(mnist_train):
    images, labels = mnist_train[0][:512], mnist_train[1][:512]

    def run(seed):
        recipe = small_recipe(batch_size=64, augmentation=Augmentation(), seed=seed)
        return utils.train_network(recipe, images, labels, images[:256], labels[:256], verbose=False)[1]

    first, second, other = run(7), run(7), run(8)
    assert first.train_loss == second.train_loss and first.test_acc == second.test_acc
    assert first.train_loss != other.train_loss


# ------------------------------------------------------------------------------ saving, predicting

def test_saved_model_says_which_network_it_holds_and_loads_back_with_identical_outputs(tmp_path):
    model = Net(n_channels=5).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    save_model(model, small_recipe(width=5), tmp_path / "artifacts" / "model.pt")
    save_model(model, small_recipe(width=5), tmp_path / "artifacts" / "model.pt")  # a model of its own: replaced
    restored = load_model(tmp_path / "artifacts" / "model.pt").eval()
    assert isinstance(restored, Net) and restored.n_channels == 5
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), restored(x))
    public = utils.build_network("PublicSmallNet")
    save_model(public, Recipe(network="PublicSmallNet"), tmp_path / "public.pt")
    assert type(load_model(tmp_path / "public.pt")).__name__ == "PublicSmallNet"


def test_model_files_that_cannot_be_read_or_must_not_be_overwritten_get_clear_errors(tmp_path):
    model = Net(n_channels=5)
    save_model(model, small_recipe(width=5), tmp_path / "model.pt")
    whole = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match="cut.pt is not a model saved by utils.save_model .*a file cut short"):
        load_model(tmp_path / "cut.pt")
    save_model(model, small_recipe(width=8), tmp_path / "mislabelled.pt")  # says width 8, holds width 5
    with pytest.raises(ValueError, match="says it holds .*'width': 8.* but its weights do not fit"):
        load_model(tmp_path / "mislabelled.pt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_model(tmp_path / "missing.pt")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(FileExistsError, match="not a model saved by save_model: not overwriting it"):
        save_model(model, small_recipe(width=5), notes)
    assert notes.read_text() == "my notes"


def test_predict_takes_one_image_a_batch_or_pil_images():
    images, _ = synthetic_digits(20)
    torch.manual_seed(0)
    model = Net(n_channels=4).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        expected = model(normalize(images)).argmax(1)
    assert len(expected.unique()) > 1  # an untrained net that answers one class would prove little
    batch = predict(model, images)
    assert batch.tolist() == expected.tolist()
    assert predict(model, images[0, 0]).tolist() == expected[:1].tolist()
    assert predict(model, images[0]).tolist() == expected[:1].tolist()
    pil = [Image.fromarray(image[0].numpy()) for image in images[:3]]
    assert predict(model, pil).tolist() == expected[:3].tolist()
    assert predict(model, pil[0]).tolist() == expected[:1].tolist()


@pytest.mark.parametrize("bad, message", [
    (torch.rand(28, 28) * 255, "values from .* \\(they look like 0-255 pixels: pass them as uint8, or divide by 255\\)"),
    (torch.zeros(2, 3, 28, 28, dtype=torch.uint8), "shape"), (torch.zeros(2, 1, 28, 28, dtype=torch.long), "got torch.int64"),
    ("a digit", "got str"), (torch.full((28, 28), float("nan")), "NaN or infinite values"),
])
def test_predict_rejects_what_it_cannot_read(bad, message):
    with pytest.raises(ValueError, match=f"expected uint8 images \\(0-255\\) or ink values in \\[0, 1\\].*{message}"):
        predict(Net(n_channels=4), bad)


def test_as_model_input_reads_uint8_and_ink_alike_on_the_models_device():
    digit = synthetic_digits(1)[0]
    model = Net(n_channels=4)
    from_uint8 = utils.as_model_input(digit, model)
    from_ink = utils.as_model_input(digit.float().numpy() / 255, model)
    assert from_uint8.shape == (1, 1, 28, 28) and torch.allclose(from_uint8, from_ink, atol=1e-6)
    assert torch.allclose(from_uint8, normalize(digit))
    assert utils.as_model_input(synthetic_digits(5)[0], model).shape == (5, 1, 28, 28)


def test_confusion_matrix_and_per_class_accuracy():
    true = torch.tensor([0, 0, 1, 1, 1, 2])
    predicted = torch.tensor([0, 1, 1, 1, 2, 2])
    confusion = confusion_matrix(true, predicted, num_classes=3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    assert torch.allclose(per_class_accuracy(confusion), torch.tensor([50.0, 200 / 3, 100.0]))


# ------------------------------------------------------------------------------------------- plots

def test_plots_return_figures():
    images, labels = synthetic_digits(30)
    history = History()
    for epoch in range(3):
        history.record(1 / (epoch + 1), 90 + epoch, 1 / (epoch + 2), 95 + epoch, 1.0)
    predicted = labels.clone()
    predicted[:5] = (predicted[:5] + 1) % 10
    samples = utils.plot_samples(images, labels, count=16)
    assert [ax.get_title() for ax in samples.axes if ax.images] == [str(int(label)) for label in labels[:16]]
    augmented = utils.plot_augmentations(images[:3], views=4)
    shown = [ax for ax in augmented.axes if ax.images]
    assert len(shown) == 3 * 5 and shown[0].get_title() == "original" and shown[4].get_title() == "view 4"
    assert np.allclose(shown[5].images[0].get_array(), images[1, 0].numpy() / 255)  # row 2 starts with digit 1
    mistakes = utils.plot_misclassified(images, labels, predicted)
    titles = [ax.get_title() for ax in mistakes.axes if ax.images]
    assert len(titles) == 5 and titles[0] == f"{int(labels[0])} -> {int(predicted[0])}"
    confusion = confusion_matrix(labels, predicted)
    matrix = utils.plot_confusion_matrix(confusion)
    counts = [int(text.get_text()) for text in matrix.axes[0].texts]
    assert counts == confusion.flatten().tolist()
    assert matrix.axes[0].images[0].get_array().diagonal().sum() == 0  # the colour shows the mistakes only


# ------------------------------------------------------------------------------ what the network sees

def test_loss_per_step_returns_one_loss_per_step_and_learns():
    torch.manual_seed(0)
    images, labels = synthetic_digits(128)
    loader = TensorLoader(images, labels, 32, shuffle=True, generator=utils.run_generator(0, "cpu"))
    losses = utils.loss_per_step(Net(n_channels=4), loader, steps=10, lr=0.05)
    assert len(losses) == 10  # more steps than one pass over the loader: it starts again
    assert sum(losses[-3:]) < sum(losses[:3])
    with pytest.raises(ValueError, match="steps"):
        utils.loss_per_step(Net(n_channels=4), [], steps=0)
    fig = utils.plot_loss_per_step({"a": losses, "b": losses[:5]})
    reference, *curves = fig.axes[0].lines
    assert [len(line.get_xdata()) for line in curves] == [10, 5]
    assert list(reference.get_ydata()) == [math.log(10)] * 2 and reference.get_zorder() < curves[0].get_zorder()


def test_plot_history_shows_every_point_and_the_target_line():
    history = History()
    for test_acc in (45.6, 96.0, 91.8, 99.7):
        history.record(0.5, 90.0, 0.2, test_acc, 1.0)
    fig = utils.plot_history(history)
    ax = fig.axes[1]
    low, high = ax.get_ylim()
    errors = [100 - a for a in history.test_acc + history.train_acc]
    assert low <= min(errors) and max(errors) <= high
    assert any(list(line.get_ydata()) == [100 - 99.4] * 2 for line in ax.lines)
    # The range that matters at the end (0.3-1% error) has labelled ticks, not only the decades.
    fig.canvas.draw()
    labelled = [tick.get_loc() for tick in ax.yaxis.get_major_ticks() if tick.label1.get_text()]
    assert len([y for y in labelled if 0.25 < y < 1.0 and low <= y <= high]) >= 2
    # The legends sit below the axes, where they cannot cover a point.
    for axes in fig.axes:
        assert axes.get_legend().get_window_extent().y1 <= axes.get_window_extent().y0


def test_first_layer_filters_get_one_panel_each_with_the_batchnorm_scale_folded_in():
    model = Net(n_channels=5)  # 10 filters at 28x28
    conv, norm = model.features[0][0], model.features[0][1]
    with torch.no_grad():
        norm.weight[3] = -2.0  # a negative scale flips what the filter responds to
        norm.running_var[3] = 4.0 - norm.eps
    fig = utils.plot_first_layer_filters(model)
    panels = [ax for ax in fig.axes if ax.images and ax.get_title().startswith("filter")]
    assert len(panels) == conv.out_channels == 10
    shown = torch.tensor(panels[3].images[0].get_array())
    assert torch.allclose(shown, -conv.weight[3, 0].detach(), atol=1e-6)  # -2 / sqrt(4) = -1
    plain = Net(batch_norm=False)  # no BatchNorm: the raw weights
    assert torch.equal(utils.first_layer_filters(plain), plain.features[0][0].weight[:, 0].detach())


def test_stage_outputs_have_the_shape_each_stage_promises():
    images, _ = synthetic_digits(1)
    maps = utils.stage_outputs(Net(), images[0])
    assert [tuple(m.shape) for m in maps] == [(16, 28, 28), (16, 14, 14), (24, 7, 7)]
    assert all(float(m.min()) >= 0 for m in maps)  # each is taken after a ReLU
    fig = utils.plot_feature_maps(maps)
    assert sum(1 for ax in fig.axes if ax.images) == 16 + 16 + 24
    with pytest.raises(ValueError, match="look like 0-255 pixels"):
        utils.stage_outputs(Net(), images[0].float())  # 0-255 as floats: neither uint8 nor ink
    with pytest.raises(ValueError, match="expected one 28x28 digit, got 2"):
        utils.stage_outputs(Net(), images.repeat(2, 1, 1, 1))


class LooksOnlyAtTopLeft(torch.nn.Module):
    """Class 3's score is the ink in the top-left 10x10 pixels; every other score is 0."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(28 * 28, 10, bias=False)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[3].view(28, 28)[:10, :10] = 1.0

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_occlusion_lights_up_the_only_region_the_model_looks_at():
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 2:8, 2:8] = 255  # ink the model reads
    image[0, 20:26, 18:26] = 255  # ink it ignores
    heat = utils.occlusion_map(LooksOnlyAtTopLeft(), image, target=3, patch=6, stride=2)
    assert heat.shape == (28, 28)
    assert float(heat[2:8, 2:8].min()) > 0.1  # hiding the top-left ink lowers class 3's probability
    assert float(heat[16:, 16:].abs().max()) == 0.0  # hiding anything far from it changes nothing
    with pytest.raises(ValueError, match="patch"):
        utils.occlusion_map(LooksOnlyAtTopLeft(), image, target=3, patch=0)


def test_plot_occlusion_explains_each_mistake_in_one_row():
    torch.manual_seed(0)
    images, labels = synthetic_digits(20)
    model = Net(n_channels=4)
    predicted, true = utils.predictions(model, TensorLoader(images, labels, 10))
    fig = utils.plot_occlusion(model, images, true, predicted, count=2)
    assert len([ax for ax in fig.axes if ax.images]) == 2 * 3
    with pytest.raises(ValueError, match="no misclassified"):
        utils.plot_occlusion(model, images, true, true)


# --------------------------------------------------------------------- showing what each ingredient does

def test_loss_curves_on_the_same_batches_feed_every_model_the_same_batches_and_train_copies():
    import copy

    images, labels = synthetic_digits(256)
    torch.manual_seed(0)
    model = Net(n_channels=4)
    twin = copy.deepcopy(model)
    before = {name: p.clone() for name, p in model.state_dict().items()}
    torch.rand(1000)  # the global generator moves on between building the models and training them
    runs = {"a": (model, 0.05), "b": (twin, 0.05)}
    curves = utils.loss_curves_on_the_same_batches(runs, images, labels, steps=5, seed=3, batch_size=32)
    assert curves["a"] == curves["b"]  # identical models, identical batches: identical losses
    assert utils.loss_curves_on_the_same_batches(runs, images, labels, steps=5, seed=3, batch_size=32) == curves
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())  # copies were trained
    other = utils.loss_curves_on_the_same_batches(runs, images, labels, steps=5, seed=4, batch_size=32)
    assert other["a"] != curves["a"]  # another seed: another order of batches, another curve


def test_activation_spread_with_batchnorm_stays_put_without_it_shrinks():
    torch.manual_seed(0)
    images = normalize(synthetic_digits(64)[0])
    with_bn, without_bn = Net(), Net(batch_norm=False)
    before = {name: b.clone() for name, b in with_bn.named_buffers()}
    spread_bn, spread_plain = utils.activation_spread(with_bn, images), utils.activation_spread(without_bn, images)
    assert len(spread_bn) == len(spread_plain) == 6
    assert all(0.3 < s < 1.0 for s in spread_bn)  # BatchNorm's output is unit spread; after the ReLU about 0.58
    assert spread_plain[-1] < spread_plain[0] / 4  # PyTorch's default initialisation loses signal each layer
    kaiming = utils.activation_spread(kaiming_init(Net(batch_norm=False)), images)
    assert kaiming[-1] > spread_plain[-1] * 4
    assert all(torch.equal(before[name], b) for name, b in with_bn.named_buffers())  # statistics left alone
    figure = utils.plot_activation_spread({"a": spread_bn, "b": spread_plain})
    assert [list(line.get_ydata()) for line in figure.axes[0].lines] == [spread_bn, spread_plain]
    assert figure.axes[0].get_yscale() == "log"


def test_schedule_trace_reads_the_one_cycle_and_step_schedules_from_the_scheduler():
    rates, momenta = utils.schedule_trace(Recipe(epochs=10, max_lr=0.1), steps_per_epoch=10)
    assert len(rates) == len(momenta) == 100
    peak = rates.index(max(rates))
    assert rates[0] == pytest.approx(0.1 / 25) and max(rates) == pytest.approx(0.1, rel=1e-3)
    assert 25 <= peak <= 35 and rates[-1] < 1e-4  # the peak at 30% of the steps, then down to almost 0
    assert momenta[0] == pytest.approx(0.95) and momenta[peak] == pytest.approx(0.85, abs=1e-3)
    step_rates, step_momenta = utils.schedule_trace(Recipe(schedule="step", epochs=15), steps_per_epoch=10)
    assert step_rates[99] == pytest.approx(0.1) and step_rates[100] == pytest.approx(0.01)
    assert set(step_momenta) == {0.9}
    adam_rates, _ = utils.schedule_trace(Recipe(optimizer="adam", schedule="step", max_lr=0.005, epochs=15,
                                                step_epochs=8), steps_per_epoch=4)
    assert adam_rates[8 * 4 - 1] == pytest.approx(0.005) and adam_rates[8 * 4] == pytest.approx(0.0005)
    figure = utils.plot_schedule(rates, momenta, 10)
    rate_line, momentum_line = (ax.lines[0] for ax in figure.axes)
    assert list(rate_line.get_ydata()) == rates and list(momentum_line.get_ydata()) == momenta
    assert rate_line.get_xdata()[-1] == pytest.approx(9.9)  # x is in epochs: step 99 of 10 a epoch


def test_fit_with_ema_decay_scores_and_keeps_the_averaged_weights():
    images, labels = synthetic_digits(128)
    torch.manual_seed(0)
    plain = fit_on(images, labels, small_recipe(epochs=2))
    torch.manual_seed(0)
    model = Net(n_channels=4)
    averaged = fit_on(images, labels, small_recipe(epochs=2, ema_decay=0.9), model=model)
    assert averaged.train_loss == plain.train_loss  # the average changes no training step
    assert averaged.test_acc != plain.test_acc  # it is the average that is scored
    assert averaged.last_weights_test_acc == plain.test_acc[-1] and plain.last_weights_test_acc is None
    # The model ends with the scored (averaged) weights: scoring it again gives the last epoch's numbers.
    utils.recompute_batchnorm_statistics(model, TensorLoader(images, labels, 32), 40)
    assert utils.test(model, TensorLoader.for_evaluation(images, labels))[1] == averaged.test_acc[-1]


def ledger_record(candidate, fold, acc, **extra):
    return dict(candidate=candidate, fold=fold, val_acc=acc, **extra)


def test_ablations_pair_each_candidate_with_the_baseline_fold_by_fold():
    ledger = [ledger_record("base", f, 99.4 + 0.01 * f) for f in range(6)]
    ledger += [ledger_record("worse", f, 99.2 + 0.01 * f + (0.02 if f % 2 else 0), train_acc=99.9) for f in range(6)]
    ledger += [ledger_record("one-fold", 0, 99.9)]
    (row,) = utils.ablations(ledger, {"worse": "a worse recipe"}, baseline="base")
    assert row.label == "a worse recipe" and row.folds == 6
    assert row.gain == pytest.approx(-0.19) and row.standard_error == pytest.approx(0.01095445 / math.sqrt(6), rel=1e-3)
    assert row.train_acc == pytest.approx(99.9)
    assert row.differences == pytest.approx((-0.2, -0.18, -0.2, -0.18, -0.2, -0.18))
    (single,) = utils.ablations(ledger, {"one-fold": "scored on one fold only"}, baseline="base")
    assert single.folds == 1 and single.gain == pytest.approx(0.5) and math.isnan(single.standard_error)
    assert "-0.190 ± 0.004  points ( -19.0 digits) over 6 folds" in str(row) and "train 99.90%" in str(row)
    assert "(1 fold)" in str(single) and "nan" not in str(single)
    with pytest.raises(ValueError, match="no fold"):
        utils.ablations(ledger, {"never-run": "not in the ledger"}, baseline="base")


def test_plot_ablations_gives_changes_that_broke_a_fold_their_own_panel_fold_by_fold():
    sometimes = (-0.5, -0.7, -1.1 + 1.0, -0.6, -0.9, -88.0)
    rows = [utils.Ablation("fine", 0.02, 0.01, 6, 99.5, None, (0.01, 0.03, 0.02, 0.0, 0.04, 0.02)),
            utils.Ablation("broken", -88.0, math.nan, 1, 11.3, None, (-88.0,)),
            utils.Ablation("sometimes broken", -15.37, 14.7, 6, 84.1, None, sometimes),
            utils.Ablation("a small loss", -0.06, 0.01, 6, 99.4, None, (-0.05,) * 6)]
    fig = utils.plot_ablations(rows, off_scale=-1.0)
    top, bottom = fig.axes
    assert {label.get_text() for label in top.get_yticklabels()} == {"broken", "sometimes broken"}
    assert {label.get_text() for label in bottom.get_yticklabels()} == {"fine", "a small loss"}
    dots = sorted(x for line in top.lines for x in line.get_xdata() if line.get_marker() == "o")
    assert dots == sorted(sometimes + (-88.0,))  # every fold of the broken changes, as a dot
    assert -0.2 < bottom.get_xlim()[0] < -0.06 and 0.04 < bottom.get_xlim()[1] < 0.15  # a scale for small changes
    colours = {bar.get_y(): bar.get_facecolor()[:3] for bar in bottom.patches}
    assert matplotlib.colors.to_rgb("tab:red") in colours.values() and matplotlib.colors.to_rgb("tab:grey") in colours.values()
    height = {label.get_text(): y for label, y in zip(bottom.get_yticklabels(), bottom.get_yticks())}
    assert height["fine"] > height["a small loss"]  # the first row on top
    assert "10 of the 10,000 digits" in bottom.get_xlabel()


def test_ablation_rows_print_their_gain_in_digits_too():
    row = utils.Ablation("dropout", -0.055, 0.016, 6, 99.40, 99.57, (-0.05,) * 6)
    assert "-0.055 ± 0.016  points (  -5.5 digits) over 6 folds" in str(row)


def test_plot_statistics_lag_draws_both_scorings_of_each_shared_fold():
    ledger = [ledger_record("lagging", f, 99.0, val_acc_per_epoch=[80.0, 90.0, 99.0]) for f in range(3)]
    ledger += [ledger_record("current", f, 99.0, val_acc_per_epoch=[95.0, 97.0, 99.0]) for f in (1, 2)]
    fig = utils.plot_statistics_lag(ledger, "lagging", "current", epochs=2)
    assert [ax.get_title() for ax in fig.axes] == ["fold 1", "fold 2"]
    assert [list(line.get_ydata()) for line in fig.axes[0].lines] == [[20.0, 10.0], [5.0, 3.0]]  # errors
    assert fig.axes[0].get_yscale() == "log" and fig.legends[0].get_texts()[0].get_fontsize() >= 9
    with pytest.raises(ValueError, match="no fold"):
        utils.plot_statistics_lag(ledger, "lagging", "missing", epochs=2)


# ------------------------------------------------------------------------------- your own handwriting


def ink_extent(image: np.ndarray) -> tuple[int, int]:
    rows, columns = np.nonzero(image > utils.INK_THRESHOLD)
    return int(np.ptp(rows)) + 1, int(np.ptp(columns)) + 1


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    return tuple(float((image.sum(axis) @ np.arange(28)) / image.sum()) for axis in (1, 0))


@pytest.mark.parametrize("how", list(utils.UNLIKE_MNIST))
def test_prepare_like_mnist_fits_the_ink_into_20_pixels_and_centres_its_mass(how):
    ink = utils.render_strokes(utils.DIGIT_STROKES[4], **utils.UNLIKE_MNIST[how])
    image = utils.prepare_like_mnist(ink)
    assert image.shape == (28, 28) and 0 <= image.min() and image.max() <= 1
    height, width = ink_extent(image)
    assert 18 <= max(height, width) <= 20  # the longer side fills MNIST's box, less faint anti-aliased edges
    row, column = centre_of_mass(image)
    assert abs(row - 13.5) <= 0.5 and abs(column - 13.5) <= 0.5


def test_prepare_like_mnist_keeps_the_aspect_ratio():
    ink = np.zeros((200, 300))
    ink[50:70, 30:270] = 1.0  # a bar 240 wide and 20 high
    height, width = ink_extent(utils.prepare_like_mnist(ink))
    assert width == 20 and height == 2  # 20 x 20 / 240 = 1.7, to the nearest pixel


def test_prepare_like_mnist_says_what_it_expected():
    with pytest.raises(ValueError, match="draw a digit"):
        utils.prepare_like_mnist(np.zeros((280, 280)))
    with pytest.raises(ValueError, match="2-D array of ink values in \\[0, 1\\]"):
        utils.prepare_like_mnist(np.ones((3, 280, 280)))
    with pytest.raises(ValueError, match="values 0 to 255"):
        utils.prepare_like_mnist(np.array([[0, 255]]))


def test_area_resize_keeps_the_mean_and_averages_whole_blocks():
    image = np.random.default_rng(0).random((280, 280))
    small = utils.area_resize(image, 28, 28)
    assert small.mean() == pytest.approx(image.mean())
    assert small[3, 5] == pytest.approx(image[30:40, 50:60].mean())


def test_read_drawing_gives_ten_probabilities_for_a_28x28_image_only():
    model = Net().eval()
    probabilities = utils.read_drawing(model, utils.prepare_like_mnist(utils.render_strokes(utils.DIGIT_STROKES[1])))
    assert probabilities.shape == (10,) and float(probabilities.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="28x28.*got shape \\(280, 280\\)"):
        utils.read_drawing(model, np.zeros((280, 280)))


def test_seed_table_lists_each_rows_seeds_in_order_with_median_and_lowest():
    def record(name, seed, acc, epochs=15, network="PublicSmallNet", batch_size=256):
        recipe = asdict(Recipe(network=network, seed=seed, epochs=epochs, batch_size=batch_size, precision="float32"))
        return dict(name=name, recipe=recipe, parameters=7_918, last_test_acc=acc)

    records = [record("small", 2, 99.40), record("small", 1, 99.50), record("small", 3, 99.60),
               record("small", 1, 10.0, epochs=19), record("notebook", 1, 20.0, network="Net"),
               record("notebook", 1, 99.45), record("notebook", 1, 99.55, batch_size=128)]
    table = utils.seed_table(records, {"a small recipe": dict(name="small"),
                                       "ours on theirs": dict(name="notebook", network="PublicSmallNet", batch_size=256),
                                       "ours on theirs, batches of 128": dict(name="notebook", batch_size=128)},
                             epochs=15)
    small, ours, ours_128 = table.splitlines()[1:]
    assert small.split()[-5:] == ["99.50", "99.40", "99.60", "99.50", "99.40"]
    assert "7,918" in small and " 1,2,3 " in small
    # Net's run of the same recipe is another row; another batch size is another row.
    assert ours.split()[-3:] == ["99.45", "99.45", "99.45"]
    assert ours_128.split()[-3:] == ["99.55", "99.55", "99.55"]
    with pytest.raises(ValueError, match="no 15-epoch run of \\{'name': 'missing'\\}"):
        utils.seed_table(records, {"never run": dict(name="missing")}, epochs=15)


def test_verdict_counts_a_change_only_beyond_twice_its_standard_error():
    assert utils.verdict(0.05, 0.02) == "gain" and utils.verdict(-0.05, 0.02) == "loss"
    assert utils.verdict(0.039, 0.02) == "within noise" and utils.verdict(-0.04, 0.02) == "within noise"


def test_batch_norm_by_hand_is_what_batchnorm2d_computes_in_training_mode_only():
    torch.manual_seed(0)
    norm = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    maps = 3 * torch.randn(32, 4, 6, 6) + 1
    by_hand = utils.batch_norm_by_hand(maps, norm)
    assert torch.allclose(by_hand, norm.train()(maps), atol=1e-5)
    assert not torch.allclose(by_hand, norm.eval()(maps), atol=1e-2)  # eval mode: the running averages


def test_networks_for_batch_norm_differ_only_in_batch_norm_and_initialisation():
    networks = utils.networks_for_batch_norm(4)
    assert all(torch.equal(a, b) for a, b in zip(networks["with BatchNorm"].state_dict().values(),
                                                 utils.networks_for_batch_norm(4)["with BatchNorm"].state_dict().values()))
    with_bn, default, kaiming = networks.values()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in [*default.modules(), *kaiming.modules()])
    first = [net.features[0][0].weight.std().item() for net in (default, kaiming)]
    assert first[1] > 2 * first[0]  # Kaiming's variance 2 / fan_in against PyTorch's 1 / (3 fan_in)


def test_fit_in_bfloat16_trains_and_keeps_weights_and_statistics_in_float32():
    images, labels = synthetic_digits(128)
    torch.manual_seed(0)
    model = Net(n_channels=4)
    history = fit_on(images, labels, small_recipe(epochs=6, precision="bfloat16"), model=model)
    torch.manual_seed(0)
    plain = fit_on(images, labels, small_recipe(epochs=6))
    assert history.epochs == 6 and history.train_loss != plain.train_loss  # another arithmetic
    # It learns as float32 does: the loss falls as far (a region spanning steps would freeze the weights).
    assert plain.train_loss[-1] < 0.8 * plain.train_loss[0]  # seeded: this network learns these digits
    assert abs(history.train_loss[-1] - plain.train_loss[-1]) < 0.1 * plain.train_loss[-1]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(b.dtype in (torch.float32, torch.int64) for b in model.buffers())
    assert history.recipe.precision == "bfloat16" and all(math.isfinite(loss) for loss in history.train_loss)


def test_pick_precision_takes_bfloat16_only_on_a_cpu_that_computes_it_natively(monkeypatch):
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        precision, why = utils.pick_precision(torch.device("cpu"))
        assert precision == ("bfloat16" if native else "float32") and ("natively" in why if native else "emulate" in why)
        assert Recipe().resolved(torch.device("cpu")).precision == precision
    assert utils.pick_precision(torch.device("cuda")) == ("float32", "bfloat16 has been measured on CPUs only")


def test_each_notebook_check_returns_a_margin_that_turns_negative_when_the_reading_fails():
    spreads = {"with BatchNorm": [0.6] * 6, "without, default initialisation": [1.0, 0.5, 0.3, 0.2, 0.1, 0.05],
               "without, Kaiming initialisation": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]}
    margins = utils.spread_checks(spreads)
    assert list(margins.values()) == pytest.approx([0.3, 0.2, 10 - 3.5])
    broken = dict(spreads, **{"with BatchNorm": [0.6, 1.2, 0.6, 0.6, 0.6, 0.6]})
    assert utils.spread_checks(broken)["BatchNorm keeps every block's spread in (0.3, 1.0)"] == pytest.approx(-0.2)
    curves = {"with": [0.3] * 20, "default": [2.3] * 20, "kaiming": [1.0] * 20}
    assert list(utils.live_run_checks(curves).values()) == pytest.approx([0.2, 0.3])
    assert utils.mistake_checks(60) == {"fewer than 100 test digits misread": 39.5}
    assert utils.mistake_checks(100)["fewer than 100 test digits misread"] < 0
    right = list(range(10))
    readings = {way: (right, right) for way in utils.UNLIKE_MNIST}
    readings["small"] = ([0] * 10, right)  # shrunk, small drawings read as 0: one right of ten
    assert utils.right_answers(readings)["small"] == (1, 10)
    assert list(utils.drawing_checks(readings).values()) == [2, 6.5, 3, 8.5]
    utils.assert_all_hold(utils.drawing_checks(readings))
    with pytest.raises(AssertionError, match="fewer than 100 test digits misread"):
        utils.assert_all_hold(utils.mistake_checks(120))


def test_shape_scores_pair_each_shape_with_the_baseline_of_its_budget_on_the_folds_asked_for():
    def run(name, fold, acc, prefix="shape-"):
        network = f"shape:{name}"
        parameters = count_parameters(utils.build_network(network))
        return dict(candidate=f"{prefix}{name}", fold=fold, val_acc=acc, parameters=parameters,
                    recipe=dict(network=network, width=None), cpu_seconds_per_epoch=10.0 + fold)

    ledger = [run("net", 0, 99.50), run("net", 3, 99.60), run("public", 0, 99.40), run("public", 3, 99.50),
              run("wide-14", 0, 99.55), run("wide-14", 3, 99.67), run("small-unpadded", 0, 99.30),
              run("small-unpadded", 3, 99.38), run("deep-7", 0, 99.9)]  # deep-7 lacks fold 3: left out
    on_gpu = [run("public", 0, 99.35, "gpu-shape-"), run("public", 3, 99.55, "gpu-shape-"),
              run("small-unpadded", 0, 99.40, "gpu-shape-"), run("small-unpadded", 3, 99.58, "gpu-shape-")]
    ledger += on_gpu
    gpu_scores = {score.name: score for score in utils.shape_scores(ledger, folds=[0, 3], prefix="gpu-shape-")}
    assert list(gpu_scores) == ["small-unpadded", "public"]  # paired with the GPU's public design only
    assert gpu_scores["small-unpadded"].gain == pytest.approx(0.04)
    scores = {score.name: score for score in utils.shape_scores(ledger, folds=[0, 3])}
    assert list(scores) == ["small-unpadded", "public", "net", "wide-14"]  # by parameters
    assert scores["wide-14"].gain == pytest.approx(0.06) and scores["wide-14"].standard_error == pytest.approx(0.01)
    assert scores["small-unpadded"].gain == pytest.approx(-0.11)  # against the public design, not Net
    assert scores["small-unpadded"].gain_text() == "-0.110 ± 0.010 vs public"
    assert scores["wide-14"].baseline == "net" and not scores["wide-14"].is_baseline
    assert scores["net"].is_baseline and scores["net"].gain_text() == "baseline"
    assert gpu_scores["public"].gain_text() == "baseline"  # named without the device's prefix
    assert scores["net"].multiply_adds == 2_044_912 and scores["net"].val_acc == pytest.approx(99.55)
    assert scores["net"].cpu_seconds_per_epoch == pytest.approx(11.5)
    fig = utils.plot_shape_map(list(scores.values()))
    left, right = fig.axes
    assert left.get_xscale() == right.get_xscale() == "linear"  # 7,144 to 19,306 parameters: a narrow span
    wide = [scores["net"], replace(scores["small-unpadded"], parameters=1_000, multiply_adds=100_000)]
    assert [ax.get_xscale() for ax in utils.plot_shape_map(wide).axes] == ["log", "log"]
    assert sorted(text.get_text() for text in left.get_legend().get_texts()) == ["Net", "the public design"]
    assert sorted(a.get_text() for a in left.texts) == ["small-unpadded", "wide-14"]  # the others are named


def test_without_its_biases_the_default_initialisation_passes_on_about_041_of_the_spread_within_a_stage():
    # What the notebook says of the default-initialised network without BatchNorm: a sixth of Kaiming's
    # variance gives a factor of sqrt(1/6) = 0.41 a block; its biases are what keep the deeper spreads larger.
    images = normalize(mnist_tensors(train=True)[0][:128])
    network = utils.networks_for_batch_norm(8, seed=1)["without, default initialisation"]
    with_biases = utils.activation_spread(network, images)
    with torch.no_grad():
        for layer in network.modules():
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)) and layer.bias is not None:
                layer.bias.zero_()
    spreads = utils.activation_spread(network, images)
    within_stages = [spreads[2] / spreads[1], spreads[3] / spreads[2], spreads[5] / spreads[4]]  # blocks 2-4, 5-6
    assert all(0.3 < ratio < 0.5 for ratio in within_stages), within_stages
    assert with_biases[-1] > 5 * spreads[-1]  # with its biases, the last block's output is mostly bias


def test_with_kaiming_initialisation_the_spread_jumps_only_after_the_max_pools():
    images = normalize(mnist_tensors(train=True)[0][:128])
    spreads = utils.activation_spread(utils.networks_for_batch_norm(8, seed=1)["without, Kaiming initialisation"],
                                      images)
    ratios = [after / before for before, after in zip(spreads, spreads[1:])]  # block 1 -> 2 and 4 -> 5 cross a pool
    assert ratios[0] > 1.5 and ratios[3] > 1.5
    assert all(0.6 < ratio < 1.2 for ratio in (ratios[1], ratios[2], ratios[4])), ratios
