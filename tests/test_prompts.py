import pytest

from clipsam.errors import InputError
from clipsam.pipelines.prompts import (
    count_targets,
    library_target,
    prompt_ensemble,
    validate_prompt,
)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("left and right lungs", 2),
        ("both kidneys", 2),
        ("two polyps", 2),
        ("3 nodules", 3),
        ("fetal head", 1),
        ("breast tumour", 1),
        ("bilateral lungs", 2),
    ],
)
def test_count_targets(prompt, expected):
    assert count_targets(prompt) == expected


def test_library_matches_names_and_aliases_case_insensitively():
    assert library_target("Breast Tumor") == "breast tumour"
    assert library_target("left and right lungs") == "lungs"
    assert library_target("a spleen") is None


def test_ensemble_keeps_user_words_first_and_adds_sentences():
    sentences = prompt_ensemble("fetal head")
    assert sentences[0] == "fetal head"
    assert len(sentences) > 3
    assert len(set(sentences)) == len(sentences)
    assert prompt_ensemble("fetal head", use_library=False) == ["fetal head"]


def test_unknown_prompt_gets_templates():
    sentences = prompt_ensemble("spleen")
    assert sentences[0] == "spleen"
    assert all("spleen" in s for s in sentences)


@pytest.mark.parametrize("bad", ["", "   ", "x" * 1000])
def test_bad_prompts_are_rejected_with_one_line(bad):
    with pytest.raises(InputError) as info:
        validate_prompt(bad)
    assert "\n" not in str(info.value)
    assert "prompt" in str(info.value)


def test_the_library_knows_every_built_in_target():
    from clipsam.train.captions import builtin_concepts

    for concept in builtin_concepts().values():
        assert library_target(concept.target) == concept.target
        assert len(prompt_ensemble(concept.target)) > 3
