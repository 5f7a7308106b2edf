"""The language identifier: the unpacked copy kept in the model cache identifies what the packaged model does."""

from __future__ import annotations

from pathlib import Path

from triage.models import language
from triage.models.local import load_examples

OTHER_LANGUAGES = [
    "Ich möchte mein Geld zurück, die Rechnung ist doppelt.",
    "Bonjour, je n'arrive pas à me connecter à mon compte.",
    "Hola, me cobraron dos veces este mes.",
    "Buongiorno, non riesco ad accedere al mio account.",
    "注文した商品がまだ届いていません。",
    "",
    "ok",
]


def test_the_unpacked_copy_identifies_what_the_packaged_model_does(tmp_path: Path) -> None:
    assert language._read_unpacked(tmp_path) is None, "nothing cached yet"
    (tmp_path / "langid-0.3.0-c52ae1077cd8.npz").write_bytes(b"the earlier layout")
    packaged = language._read_packaged(tmp_path)
    (copy,) = tmp_path.glob("langid-*.npy")
    unpacked = language._read_unpacked(tmp_path)
    assert unpacked is not None
    texts = [example.text for example in load_examples()[::4]] + OTHER_LANGUAGES
    assert [unpacked.classify(text) for text in texts] == [packaged.classify(text) for text in texts]
    assert {unpacked.classify(text)[0] for text in OTHER_LANGUAGES[:5]} == {"de", "fr", "es", "it", "ja"}
    assert not list(tmp_path.glob("*.tmp")), "the folder written first was renamed into place"
    assert not list(tmp_path.glob("*.npz")), "a copy in the earlier layout is removed"

    mapped = [(path.name, path.stat().st_ino, path.stat().st_mtime_ns) for path in sorted(copy.iterdir())]
    language._write_unpacked(packaged, copy)  # a second writer (another process) keeps the first copy
    assert language._read_unpacked(tmp_path) is not None
    assert [(path.name, path.stat().st_ino, path.stat().st_mtime_ns) for path in sorted(copy.iterdir())] == mapped, (
        "a file a reader may have mapped is never rewritten in place"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == [copy.name]

    table = copy / "nextmove.npy"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])  # a copy cut short is not used
    assert language._read_unpacked(tmp_path) is None
    (copy / "row.npy").unlink()  # nor one missing an array
    assert language._read_unpacked(tmp_path) is None
