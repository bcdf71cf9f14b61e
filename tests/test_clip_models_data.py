"""CLIP models, checkpoints, image-text readers, zero-shot and retrieval metrics (tiny, offline)."""

from __future__ import annotations

import csv
import io
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("webdataset")

from PIL import Image  # noqa: E402

from gkl.data.image_text import CaptionCsv, CaptionedDigits, LabelledDigits, webdataset_pairs  # noqa: E402
from gkl.metrics.retrieval import RetrievalEvaluator, retrieval_recall  # noqa: E402
from gkl.metrics.zeroshot import IMAGENET_CLASSNAMES, ZeroShotEvaluator, folder_classnames, zero_shot_classifier  # noqa: E402
from gkl.models.clip import (  # noqa: E402
    create_clip,
    create_tokenizer,
    export_local_dir,
    export_run_checkpoint,
    image_transform,
    save_openclip_checkpoint,
)
from gkl.utils.errors import InputError  # noqa: E402

NAME = "gkl-tiny-clip-student"


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return create_clip(NAME)


@pytest.fixture(scope="module")
def tokenizer():
    return create_tokenizer(NAME)


def _same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------------- models / checkpoints


def test_checkpoint_round_trips_through_open_clip_create_model(student, tmp_path):
    path = save_openclip_checkpoint(student, tmp_path / "student.pt")
    _same_state(student, open_clip.create_model(NAME, pretrained=str(path)))
    _same_state(student, create_clip(NAME, pretrained=path))
    folder = export_local_dir(student, NAME, tmp_path / "export")
    _same_state(student, open_clip.create_model(f"local-dir:{folder}"))
    torch.save({"model": {f"module.{k}": v for k, v in student.state_dict().items()}, "epoch": 3}, tmp_path / "run.pt")
    _same_state(student, create_clip(NAME, pretrained=export_run_checkpoint(tmp_path / "run.pt", tmp_path / "w.pt")))


def test_bad_weight_files_and_names_are_input_errors(student, tmp_path):
    with pytest.raises(InputError, match="teacher.pretrained: weight file .*nope.pt' does not exist"):
        create_clip(NAME, pretrained=tmp_path / "nope.pt", what="teacher")
    save_openclip_checkpoint(student, tmp_path / "student.pt")
    with pytest.raises(InputError, match="does not fit OpenCLIP model 'gkl-tiny-clip-teacher'"):
        create_clip("gkl-tiny-clip-teacher", pretrained=tmp_path / "student.pt")
    with pytest.raises(InputError, match="unknown OpenCLIP model name 'ViT-Q-99'"):
        create_clip("ViT-Q-99")


# ----------------------------------------------------------------------------- readers


def _write_images(folder, n=4):
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_caption_file_reader(tmp_path, student, tokenizer, suffix, sep):
    names = _write_images(tmp_path)
    rows = [(names[0], "a cat, sitting"), (names[1], "a dog"), (names[0], "the same cat"), (names[2], "a car")]
    with open(tmp_path / f"pairs{suffix}", "w", newline="") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(["filepath", "title"])
        w.writerows(rows)
    transform = image_transform(student, train=False)
    data = CaptionCsv(tmp_path / f"pairs{suffix}", transform=transform, tokenizer=tokenizer)
    assert len(data) == 4 and data.image_ids == [0, 1, 0, 2]
    for i, (name, caption) in enumerate(rows):
        image, tokens = data[i]
        assert torch.equal(image, transform(Image.open(tmp_path / name).convert("RGB")))
        assert torch.equal(tokens, tokenizer([caption])[0])
    assert image.shape == (3, 16, 16)


def test_caption_file_naming_a_missing_image_fails_at_construction(tmp_path, tokenizer):
    names = _write_images(tmp_path, 1)
    (tmp_path / "pairs.csv").write_text(f"filepath,title\n{names[0]},ok\ngone.jpg,lost\n")
    with pytest.raises(InputError, match=r"pairs.csv' line 3: image .*gone.jpg' does not exist \(1 of 2"):
        CaptionCsv(tmp_path / "pairs.csv", transform=lambda x: x, tokenizer=tokenizer)
    (tmp_path / "cols.csv").write_text(f"path,caption\n{names[0]},ok\n")
    with pytest.raises(InputError, match="no column 'filepath'"):
        CaptionCsv(tmp_path / "cols.csv", transform=lambda x: x, tokenizer=tokenizer)


def test_webdataset_tar_shard_reader(tmp_path, student, tokenizer):
    rng = np.random.default_rng(1)
    expected = []
    for shard in range(2):
        with tarfile.open(tmp_path / f"shard-{shard:03d}.tar", "w") as tar:
            for i in range(3):
                key = f"{shard:03d}{i:04d}"
                img = Image.fromarray(rng.integers(0, 255, (9, 9, 3), dtype=np.uint8))
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                caption = f"sample {shard} {i}"
                for ext, payload in (("png", buf.getvalue()), ("txt", caption.encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                expected.append((img, caption))
    transform = image_transform(student, train=False)
    pairs = list(webdataset_pairs(str(tmp_path / "shard-{000..001}.tar"), transform=transform, tokenizer=tokenizer))
    assert len(pairs) == 6
    for (image, tokens), (img, caption) in zip(pairs, expected):
        assert torch.equal(image, transform(img.convert("RGB")))
        assert torch.equal(tokens, tokenizer([caption])[0])
    with pytest.raises(InputError, match="shard-002.tar' does not exist"):
        webdataset_pairs(str(tmp_path / "shard-{000..002}.tar"), transform=transform, tokenizer=tokenizer)


def test_captioned_digits(student, tokenizer):
    data = CaptionedDigits(
        True, transform=image_transform(student, train=False), tokenizer=tokenizer, random_caption=False
    )
    image, tokens = data[0]
    assert image.shape == (3, 16, 16)
    assert torch.equal(tokens, tokenizer([data.caption(0)])[0])
    assert data.caption(0).startswith("a photo of the digit ")


# ----------------------------------------------------------------------------- zero-shot


class _Constructed(nn.Module):
    """A stand-in CLIP with known embeddings: text = row of E for the class word, image = given vector."""

    def __init__(self, words, dim=4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.words = words
        self.table = torch.randn(len(words), dim, generator=g)

    def encode_text(self, tokens, normalize=False):
        emb = self.table[tokens[:, 0]] + 0.1 * tokens[:, 1:2].float()  # class word, template offset
        return F.normalize(emb, dim=-1) if normalize else emb

    def encode_image(self, images, normalize=False):
        return F.normalize(images, dim=-1) if normalize else images


def test_zero_shot_classifier_and_accuracy_on_a_constructed_case():
    words = ["ant", "bee", "cat"]
    templates = ["{} 0", "{} 1"]

    def tokenizer(texts):
        return torch.tensor([[words.index(t.split()[0]), int(t.split()[1])] for t in texts])

    model = _Constructed(words)
    classifier = zero_shot_classifier(model, tokenizer, words, templates)
    for c in range(3):  # mean of normalised template embeddings, normalised
        embs = [F.normalize(model.table[c] + 0.1 * t, dim=0) for t in (0, 1)]
        torch.testing.assert_close(classifier[:, c], F.normalize(sum(embs), dim=0))
    # images: the class columns themselves, but label 2 claimed for the first image -> 2 of 3 correct at top-1
    images = classifier.T.clone()
    labels = torch.tensor([2, 1, 2])
    out = ZeroShotEvaluator(words, templates, tokenizer, topk=(1, 2))(model, [(images, labels)])
    second = (classifier.T[0] @ classifier).argsort(descending=True)[1].item()
    assert out["zeroshot_top1"] == pytest.approx(200 / 3)
    assert out["zeroshot_top2"] == pytest.approx(100.0 if second == 2 else 200 / 3)
    assert out["zeroshot_count"] == 3


def test_zero_shot_classifier_matches_open_clip_on_a_real_tiny_clip(student, tokenizer):
    names, templates = ["zero", "one", "two"], ["a photo of the digit {}.", "a handwritten {}."]
    ours = zero_shot_classifier(student, tokenizer, names, templates)
    ref = open_clip.build_zero_shot_classifier(student, tokenizer, names, templates)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    data = LabelledDigits(False, transform=image_transform(student, train=False))
    loader = torch.utils.data.DataLoader(data, batch_size=128)
    out = ZeroShotEvaluator(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"], templates, tokenizer
    )(student, loader)
    assert out["zeroshot_count"] == len(data)
    # the same accuracies from open_clip's classifier and an argsort, image by image
    names10 = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    ref10 = open_clip.build_zero_shot_classifier(student, tokenizer, names10, templates)
    hits1 = hits5 = 0
    with torch.no_grad():
        for images, labels in loader:
            order = (student.encode_image(images, normalize=True) @ ref10).argsort(dim=1, descending=True)
            hits1 += int((order[:, 0] == labels).sum())
            hits5 += int((order[:, :5] == labels[:, None]).any(dim=1).sum())
    assert out["zeroshot_top1"] == pytest.approx(100 * hits1 / len(data), abs=1e-9)
    assert out["zeroshot_top5"] == pytest.approx(100 * hits5 / len(data), abs=1e-9)


class _OneHot(nn.Module):
    """A stand-in CLIP whose text embedding of class c is e_c and whose image embedding is the
    image itself: images e_y make every class separable; a constant image makes all scores equal."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def encode_text(self, tokens, normalize=False):
        return F.one_hot(tokens[:, 0], self.classes).float()

    def encode_image(self, images, normalize=False):
        return F.normalize(images, dim=-1) if normalize else images


def _one_hot_case(classes: int = 12):
    names = [f"class{c}" for c in range(classes)]

    def tokenizer(texts):
        return torch.tensor([[names.index(t.split()[-1])] for t in texts])

    labels = torch.arange(3 * classes) % classes
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    evaluator = ZeroShotEvaluator(names, ["a photo of {}", "art of {}"], tokenizer, topk=(1, 5))
    return _OneHot(classes), evaluator, labels


def test_zero_shot_accuracy_is_100_when_every_class_is_separable():
    model, evaluator, labels = _one_hot_case()
    images = 2.0 * F.one_hot(labels, 12).float() + 0.1  # nearest class column: the label's
    loader = [(images[:20], labels[:20]), (images[20:], labels[20:])]
    out = evaluator(model, loader)
    assert out == {"zeroshot_top1": 100.0, "zeroshot_top5": 100.0, "zeroshot_count": 36}
    # one class embedded as its neighbour: exactly its 3 images leave top-1, and stay in top-5
    moved = images.clone()
    moved[labels == 4] = 2.0 * F.one_hot(torch.tensor(5), 12).float() + 0.1 + 0.5 * F.one_hot(torch.tensor(4), 12)
    out = evaluator(model, [(moved, labels)])
    assert out["zeroshot_top1"] == pytest.approx(100 * 33 / 36) and out["zeroshot_top5"] == 100.0


def test_zero_shot_ties_rank_the_lower_class_first():
    """All scores equal (docs/clip.md): top-1 = share of class 0, top-5 = share of classes 0..4."""
    model, evaluator, _ = _one_hot_case()
    labels = torch.tensor([c for c in range(12) for _ in range(c + 1)])  # class c has c + 1 images
    images = torch.ones(len(labels), 12)
    out = evaluator(model, [(images, labels)])
    assert out["zeroshot_top1"] == pytest.approx(100 * 1 / 78)
    assert out["zeroshot_top5"] == pytest.approx(100 * (1 + 2 + 3 + 4 + 5) / 78)


def test_folder_classnames():
    assert folder_classnames(["n01440764", "n01443537"]) == ["tench", "goldfish"]
    assert folder_classnames(["0", "1", "10"]) == [
        IMAGENET_CLASSNAMES[0],
        IMAGENET_CLASSNAMES[1],
        IMAGENET_CLASSNAMES[10],
    ]
    assert folder_classnames(["sea_lion", "cat"]) == ["sea lion", "cat"]


# ----------------------------------------------------------------------------- retrieval


def test_retrieval_recall_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6, 7])
    images = F.normalize(torch.randn(8, 5, generator=g), dim=1)[ids]
    texts = F.normalize(images + 0.8 * torch.randn(len(ids), 5, generator=g), dim=1)
    got = retrieval_recall(images, texts, ids, ks=(1, 2, 5))
    uniq = F.normalize(torch.randn(8, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    for k in (1, 2, 5):
        t2i = [ids[t].item() in (texts[t] @ uniq.T).topk(k).indices.tolist() for t in range(len(ids))]
        i2t = [
            bool(set((uniq[i] @ texts.T).topk(k).indices.tolist()) & set((ids == i).nonzero().flatten().tolist()))
            for i in range(8)
        ]
        assert got[f"t2i_R@{k}"] == pytest.approx(100 * sum(t2i) / len(t2i))
        assert got[f"i2t_R@{k}"] == pytest.approx(100 * sum(i2t) / len(i2t))


def test_retrieval_evaluator_on_a_caption_file(tmp_path, student, tokenizer):
    names = _write_images(tmp_path, 3)
    (tmp_path / "val.csv").write_text(
        "filepath,title\n" + "\n".join(f"{n},caption {i}" for i, n in enumerate(names + names[:1])) + "\n"
    )
    data = CaptionCsv(tmp_path / "val.csv", transform=image_transform(student, train=False), tokenizer=tokenizer)
    out = RetrievalEvaluator()(student, torch.utils.data.DataLoader(data, batch_size=2))
    assert set(out) == {f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert out["i2t_R@5"] == out["t2i_R@5"] == 100.0  # only 3 images / 4 captions
