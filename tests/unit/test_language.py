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
    packaged = language._read_packaged(tmp_path)
    (copy,) = tmp_path.glob("langid-*.npz")
    unpacked = language._read_unpacked(tmp_path)
    assert unpacked is not None
    texts = [example.text for example in load_examples()[::4]] + OTHER_LANGUAGES
    assert [unpacked.classify(text) for text in texts] == [packaged.classify(text) for text in texts]
    assert {unpacked.classify(text)[0] for text in OTHER_LANGUAGES[:5]} == {"de", "fr", "es", "it", "ja"}

    copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])  # a copy cut short is not used
    assert language._read_unpacked(tmp_path) is None
    assert not list(tmp_path.glob("*.tmp"))
