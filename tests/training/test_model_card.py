"""The model card says what the held-out LIDC patients were used for, and what training does with the filler."""

from service.runtime.manifest import Manifest
from tests.conftest import DEFAULT_STORE, DEFAULT_VERSION
from training.model_card import render_model_card


def test_the_card_calls_the_lidc_figures_validation_figures_and_words_the_filler_as_the_code_does():
    folder = DEFAULT_STORE / "res_mtnet" / DEFAULT_VERSION
    for card in (render_model_card(Manifest.read(folder)), (folder / "MODEL_CARD.md").read_text()):
        text = " ".join(card.split())
        assert "never trained on" not in text and "cannot learn from it" not in text
        assert "choose between recipes, fit the calibration and set the spiculation flag's threshold" in text
        assert "optimistic for new patients" in text
        assert "three of four examples and left as stored in one in four" in text
        assert "one random lung-like fill outside each VOI" in text
