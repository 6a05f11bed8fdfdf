"""Every AttentionService RPC against a real server on the tiny exported models."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from service.client import AttnserveClient
from tests.integration.models import CAPTIONER, SHORT_REQUEST, SUMMARIZER, TEXT


def test_summarize_answers_with_text_and_final_fields(client: AttnserveClient):
    answer = client.summarize(TEXT, **SHORT_REQUEST)

    assert answer.text
    assert (answer.model, answer.model_version) == (SUMMARIZER, "1")
    assert answer.input_tokens == len(TEXT.split()) + 2  # <s> ... </s>
    assert 0 < answer.output_tokens <= SHORT_REQUEST["max_new_tokens"]
    assert answer.finish_reason in ("eos", "length")
    assert len(answer.token_ids) == answer.output_tokens


def test_summarize_stream_chunks_concatenate_to_the_unary_text(client: AttnserveClient):
    unary = client.summarize(TEXT, max_new_tokens=20, min_new_tokens=20)
    chunks = list(client.summarize_stream(TEXT, max_new_tokens=20, min_new_tokens=20))

    assert "".join(chunk.text_delta for chunk in chunks) == unary.text
    assert [token for chunk in chunks for token in chunk.token_ids] == list(unary.token_ids)
    assert len(chunks) > 2  # tokens went out as they were produced, not in one piece
    final = chunks[-1]
    assert (final.finish_reason, final.output_tokens) == (unary.finish_reason, unary.output_tokens)
    assert (final.model, final.model_version, final.input_tokens) == (
        SUMMARIZER,
        "1",
        unary.input_tokens,
    )
    assert not any(chunk.finish_reason for chunk in chunks[:-1])


def test_caption_answers_with_the_default_captioner(client: AttnserveClient, png_image: bytes):
    answer = client.caption(png_image)

    assert answer.text
    assert answer.model == CAPTIONER
    assert answer.finish_reason in ("eos", "length")


def test_caption_stream_chunks_concatenate_to_the_unary_text(
    client: AttnserveClient, png_image: bytes
):
    unary = client.caption(png_image)
    chunks = list(client.caption_stream(png_image))

    assert "".join(chunk.text_delta for chunk in chunks) == unary.text
    assert chunks[-1].finish_reason == unary.finish_reason


def test_beam_search_stream_carries_the_unary_beam_text(client: AttnserveClient):
    params = {"max_new_tokens": 12, "num_beams": 3}
    unary = client.summarize(TEXT, **params)
    chunks = list(client.summarize_stream(TEXT, **params))

    assert "".join(chunk.text_delta for chunk in chunks) == unary.text


def test_a_named_model_answers_under_its_name(client: AttnserveClient):
    assert client.summarize(TEXT, model=SUMMARIZER, **SHORT_REQUEST).model == SUMMARIZER


def test_seeded_sampling_is_reproducible(client: AttnserveClient):
    params = {"do_sample": True, "top_k": 0, "temperature": 1.5, "max_new_tokens": 16}
    first = client.summarize(TEXT, seed=7, **params)
    again = client.summarize(TEXT, seed=7, **params)

    assert first.token_ids == again.token_ids


def test_list_models_lists_both_tasks_with_one_default_each(client: AttnserveClient):
    models = {model.name: model for model in client.list_models()}

    assert set(models) == {SUMMARIZER, CAPTIONER}
    summarizer, captioner = models[SUMMARIZER], models[CAPTIONER]
    assert (summarizer.task, summarizer.architecture) == ("summarization", "bart")
    assert (captioner.task, captioner.architecture) == ("captioning", "vision-encoder-decoder")
    for model in (summarizer, captioner):
        assert model.is_default
        assert (model.version, model.dtype, model.provider) == ("1", "fp32", "CPUExecutionProvider")
        assert model.max_input_tokens > 0


def test_list_models_filters_by_task(client: AttnserveClient):
    assert [model.name for model in client.list_models(task="captioning")] == [CAPTIONER]


def test_concurrent_requests_get_the_answers_they_get_alone(client: AttnserveClient):
    """Mixed lengths and greedy/beam requests batched together answer as each does alone."""
    requests = [
        (" ".join(f"w{(i * 7 + j) % 50}" for j in range(5 + 3 * i)), {"num_beams": 1 + i % 3})
        for i in range(8)
    ]
    alone = [
        client.summarize(text, max_new_tokens=16, **params).token_ids for text, params in requests
    ]

    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(
            pool.map(
                lambda request: client.summarize(request[0], max_new_tokens=16, **request[1]),
                requests,
            )
        )

    assert [answer.token_ids for answer in together] == alone
