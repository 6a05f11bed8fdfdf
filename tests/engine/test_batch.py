"""DecodeBatch row bookkeeping: filter, concatenate and reorder keep every row's state intact.

Rows are given recognisable K/V (each row's values encode its id and position), so after any
operation each row's real (mask = 1) positions must still hold exactly its own values. The same
checks run on NumpyOps and on the OrtValue ops (their ONNX graphs, here on the CPU provider).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from service.engine.batch import DecodeBatch, compaction_order
from service.engine.decoding import RowParams
from service.engine.encoding import BackgroundEncoder, EncoderRun
from service.engine.sequence import SequenceGroup
from service.runtime.kv_tensors import NumpyOps, OrtValueOps
from tests.engine.params import GREEDY, resolved_params

H, DH, LAYERS = 2, 3, 2


def _kv(row_ids: list[int], lengths: list[int], width: int, pad_left: bool) -> np.ndarray:
    """[B, H, width, DH]: row r's position j holds 1000*id + j; padding is zero."""
    out = np.zeros((len(row_ids), H, width, DH), np.float32)
    for r, (row_id, length) in enumerate(zip(row_ids, lengths, strict=True)):
        values = 1000 * row_id + np.arange(1, length + 1, dtype=np.float32)
        cols = slice(width - length, width) if pad_left else slice(0, length)
        out[r, :, cols, :] = values[None, :, None]
    return out


def _mask(lengths: list[int], width: int, pad_left: bool) -> np.ndarray:
    cols = np.arange(width)[None, :]
    lengths_col = np.array(lengths)[:, None]
    return (cols >= width - lengths_col if pad_left else cols < lengths_col).astype(np.int64)


def _batch(ops, row_ids: list[int], past_lens: list[int], enc_lens: list[int]) -> DecodeBatch:
    p, s = max(past_lens), max(enc_lens)
    wrap = (lambda x: x) if isinstance(ops, NumpyOps) else ops.from_numpy
    n = len(row_ids)
    sequences = np.zeros((n, 8), np.int64)
    sequences[:, 0] = row_ids
    return DecodeBatch(
        requests=[_request() for _ in row_ids],
        sequences=sequences,
        lengths=np.ones(n, np.int64),
        new_tokens=1,
        self_mask=_mask(past_lens, p, pad_left=True),
        past=[wrap(_kv(row_ids, past_lens, p, True)) for _ in range(2 * LAYERS)],
        encoder_mask=_mask(enc_lens, s, pad_left=False),
        cross=[wrap(_kv(row_ids, enc_lens, s, False)) for _ in range(2 * LAYERS)],
        params=RowParams.for_request(GREEDY, n),
        rngs=np.array([None] * n, dtype=object),
        ops=ops,
    )


def _request(rows: int = 1) -> SequenceGroup:
    params = GREEDY if rows == 1 else resolved_params(num_beams=rows)
    return SequenceGroup(params=params, encoder_feeds={}, input_tokens=0, emit=lambda _: None)


def _take(batch: DecodeBatch, keep: list[int]) -> DecodeBatch:
    """Rows `keep` of a batch of one-row requests."""
    return batch.take_rows(np.array(keep), [batch.requests[i] for i in keep])


def _host(x) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.numpy()


def _assert_rows(
    batch: DecodeBatch, row_ids: list[int], past_lens, enc_lens, enc_width: int | None = None
) -> None:
    """Every row holds exactly its own K/V at its real positions and zeros in its padding; the
    past is as wide as its longest row, the encoder side `enc_width` (default: its longest)."""
    assert batch.sequences[:, 0].tolist() == row_ids
    p, s = batch.past_length, batch.encoder_mask.shape[1]
    assert p == max(past_lens), "past padding nobody needs is trimmed"
    assert s == (enc_width or max(enc_lens))
    np.testing.assert_array_equal(batch.self_mask, _mask(past_lens, p, True))
    np.testing.assert_array_equal(batch.encoder_mask, _mask(enc_lens, s, False))
    for x in batch.past:
        np.testing.assert_array_equal(_host(x), _kv(row_ids, past_lens, p, True))
    for x in batch.cross:
        np.testing.assert_array_equal(_host(x), _kv(row_ids, enc_lens, s, False))


class _HostOrtOps(OrtValueOps):
    def __init__(self) -> None:
        super().__init__(np.float32, device="cpu")

    def from_numpy(self, x: np.ndarray):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(x)


@pytest.fixture(params=["numpy", "ortvalue"])
def ops(request):
    return NumpyOps() if request.param == "numpy" else _HostOrtOps()


def test_filter_keeps_chosen_rows_and_trims_padding(ops):
    batch = _batch(ops, [1, 2, 3, 4], past_lens=[2, 6, 3, 1], enc_lens=[4, 2, 7, 3])
    kept = _take(batch, [0, 2, 3])
    _assert_rows(kept, [1, 3, 4], [2, 3, 1], [4, 7, 3])
    kept = _take(kept, [2, 0])  # 4 of 7 encoder columns used: not worth a copy
    _assert_rows(kept, [4, 1], [1, 2], [3, 4], enc_width=7)
    kept = _take(kept, [0])  # 3 of 7: trimmed
    _assert_rows(kept, [4], [1], [3])


def test_filter_moving_a_tail_row_into_a_hole_keeps_every_row(ops):
    batch = _batch(ops, [1, 2, 3, 4, 5], past_lens=[2, 6, 3, 1, 4], enc_lens=[4, 2, 7, 3, 5])
    kept = _take(batch, [0, 4, 2, 3])
    _assert_rows(kept, [1, 5, 3, 4], [2, 4, 3, 1], [4, 5, 7, 3])


def test_filter_drops_leaving_requests_and_fills_their_rows_from_the_end(ops):
    batch = _batch(ops, [1, 2, 3, 4, 5], past_lens=[2, 6, 3, 1, 4], enc_lens=[4, 2, 7, 3, 5])
    requests = batch.requests
    kept = batch.filter([requests[1]])
    assert kept is not None and kept.requests == [requests[0], requests[4], *requests[2:4]]
    _assert_rows(kept, [1, 5, 3, 4], [2, 4, 3, 1], [4, 5, 7, 3])
    assert kept.filter(kept.requests) is None


def test_filter_moves_a_beam_requests_rows_together():
    ops = NumpyOps()
    one, beams, last = _request(), _request(rows=2), _request()
    batch = DecodeBatch.concatenate(
        [
            _batch(ops, [1], [1], [2]),
            _batch(ops, [2, 3], [2, 2], [3, 3]),
            _batch(ops, [4], [3], [1]),
        ]
    )
    batch.requests = [one, beams, last]
    kept = batch.filter([one])  # the beams keep their rows; the last request fills the hole
    assert kept is not None and kept.requests == [last, beams]
    _assert_rows(kept, [4, 2, 3], [3, 2, 2], [1, 3, 3])


def test_numpy_compaction_moves_only_displaced_rows_in_place():
    x = _kv([1, 2, 3, 4, 5], [3] * 5, 3, False)
    compacted = NumpyOps().compact_rows(x, np.array([0, 4, 2, 3]))
    assert np.shares_memory(compacted, x) and compacted.flags.c_contiguous
    np.testing.assert_array_equal(compacted, _kv([1, 5, 3, 4], [3] * 4, 3, False))


def test_numpy_joins_reuse_spare_rows_of_the_cross_buffer():
    ops = NumpyOps()
    running = ops.concat_rows([_kv([1, 2], [3, 2], 4, False)], 4, pad_left=False)
    joined = ops.concat_rows([running, _kv([3], [2], 2, False)], 4, pad_left=False)
    assert np.shares_memory(joined, running) and joined.flags.c_contiguous
    np.testing.assert_array_equal(joined, _kv([1, 2, 3], [3, 2, 2], 4, False))
    leaving = ops.compact_rows(joined, np.array([0, 2]))
    rejoined = ops.concat_rows([leaving, _kv([7], [1], 1, False)], 4, pad_left=False)
    np.testing.assert_array_equal(rejoined, _kv([1, 3, 7], [3, 2, 1], 4, False))


def test_a_wider_newcomer_joins_into_room_made_before_the_join():
    """The encoder's thread makes the room (issue 19); the join then only copies into it."""
    ops = NumpyOps()
    running = _batch(ops, [1, 2], past_lens=[5, 2], enc_lens=[3, 6])
    wider = _batch(ops, [3], past_lens=[0], enc_lens=[9])
    room = running.cross_room_for([wider])
    assert room is not None and all(r.shape == (2 + 1 + 4, H, 9, DH) for r in room)
    assert not any(r.any() for r in room), "zeroed: padding and spare rows read as zeros"
    joined = DecodeBatch.concatenate([running, wider], cross_room=room)
    _assert_rows(joined, [1, 2, 3], [5, 2, 0], [3, 6, 9])
    assert all(np.shares_memory(x, r) for x, r in zip(joined.cross, room, strict=True))
    narrower = _batch(ops, [4], past_lens=[0], enc_lens=[2])
    assert joined.cross_room_for([narrower]) is None, "spare rows at the width: no room needed"


def test_a_room_that_no_longer_fits_is_left_aside():
    """Rows may join between the room's making and the join: then the join makes its own."""
    ops = NumpyOps()
    running = _batch(ops, [1], past_lens=[1], enc_lens=[3])
    room = running.cross_room_for([_batch(ops, [2], past_lens=[0], enc_lens=[5])])
    assert room is not None
    wider_still = _batch(ops, [3], past_lens=[0], enc_lens=[8])
    joined = DecodeBatch.concatenate([running, wider_still], cross_room=room)
    _assert_rows(joined, [1, 3], [1, 0], [3, 8])
    assert not any(np.shares_memory(x, r) for x, r in zip(joined.cross, room, strict=True))


def test_the_room_counts_every_batch_joining_before_the_newcomer():
    ops = NumpyOps()
    running = DecodeBatch.concatenate(  # 2 rows in a buffer with spare rows for 6
        [_batch(ops, [1], [1], [3]), _batch(ops, [2], [1], [3])]
    )
    newcomers = [_batch(ops, [i], [0], [3]) for i in range(3, 8)]
    assert running.cross_room_for(newcomers[:4]) is None, "6 rows fit the spare rows"
    room = running.cross_room_for(newcomers)
    assert room is not None and room[0].shape[0] >= 7
    joined = DecodeBatch.concatenate([running, DecodeBatch.concatenate(newcomers)], cross_room=room)
    _assert_rows(joined, [1, 2, 3, 4, 5, 6, 7], [1, 1, 0, 0, 0, 0, 0], [3] * 7)
    assert np.shares_memory(joined.cross[0], room[0])


def test_the_background_encoder_tells_each_run_which_runs_wait_to_join_before_it():
    ops = NumpyOps()
    seen: list[tuple[DecodeBatch, list[DecodeBatch]]] = []
    done = threading.Event()

    def encode(groups: list[SequenceGroup]):
        return [EncoderRun(_batch(ops, [len(seen) + 1], [0], [2]), 0.0, 2)], []

    def make_room(batch: DecodeBatch, waiting: list[DecodeBatch]) -> None:
        seen.append((batch, waiting))
        if len(seen) in (2, 3):
            done.set()

    encoder = BackgroundEncoder(encode, make_room)
    encoder.submit([])
    encoder.submit([])
    assert done.wait(10)
    first, second = seen
    assert first[1] == [] and second[1] == [first[0]], "the first run has not joined yet"
    runs: list[EncoderRun] = []
    while len(runs) < 2:
        runs += encoder.finished(wait=True)[0]
    assert [run.batch for run in runs] == [first[0], second[0]]
    done.clear()
    encoder.submit([])
    assert done.wait(10)
    assert seen[2][1] == [], "both joined: nothing waits before the third"


def test_device_buffers_need_no_room_made_early():
    ops = _HostOrtOps()
    running = _batch(ops, [1], past_lens=[1], enc_lens=[3])
    assert running.cross_room_for([_batch(ops, [2], past_lens=[0], enc_lens=[5])]) is None


def test_concatenate_pads_pasts_left_and_encoders_right(ops):
    running = _batch(ops, [1, 2], past_lens=[5, 2], enc_lens=[3, 6])
    joining = _batch(ops, [3], past_lens=[0], enc_lens=[9])
    joined = DecodeBatch.concatenate([running, joining])
    _assert_rows(joined, [1, 2, 3], [5, 2, 0], [3, 6, 9])


def test_concatenate_refuses_rows_expecting_different_token_counts(ops):
    running = _batch(ops, [1], past_lens=[2], enc_lens=[3])
    joining = _batch(ops, [2], past_lens=[0], enc_lens=[3])
    joining.new_tokens = 3
    with pytest.raises(ValueError, match="same new-token count"):
        DecodeBatch.concatenate([running, joining])


def test_reorder_copies_source_rows_onto_destination_rows(ops):
    batch = _batch(ops, [1, 2, 3], past_lens=[4, 4, 4], enc_lens=[2, 2, 2])
    batch.reorder(np.array([0, 1, 2]), np.array([2, 0, 0]))
    for x in batch.past:
        np.testing.assert_array_equal(_host(x), _kv([3, 1, 1], [4, 4, 4], 4, True))
    assert batch.sequences[:, 0].tolist() == [3, 1, 1]


def test_decoder_inputs_feed_each_rows_last_token_at_its_own_position():
    batch = _batch(NumpyOps(), [1, 2], past_lens=[3, 1], enc_lens=[2, 2])
    batch.sequences[0, :4] = [1, 5, 6, 7]
    batch.sequences[1, :2] = [2, 8]
    batch.lengths = np.array([4, 2])
    inputs = batch.decoder_inputs()
    assert inputs["input_ids"].tolist() == [[7], [8]]
    assert inputs["position_ids"].tolist() == [[3], [1]]
    np.testing.assert_array_equal(inputs["self_attention_mask"], [[1, 1, 1, 1], [0, 0, 1, 1]])


def test_append_tokens_grows_each_row_by_one():
    batch = _batch(NumpyOps(), [1, 2], past_lens=[1, 1], enc_lens=[2, 2])
    batch.lengths = np.array([8, 3])  # row 0 is at the sequence buffer's capacity
    batch.append_tokens(np.array([4, 5]))
    assert batch.lengths.tolist() == [9, 4]
    assert batch.sequences[0, 8] == 4 and batch.sequences[1, 3] == 5


@pytest.mark.parametrize(
    ("sizes", "leaving", "order"),
    [
        ([1, 1, 1, 1], [False, True, False, False], [0, 3, 2]),  # the last row fills the hole
        ([1, 1, 1], [False, False, True], [0, 1]),  # nothing moves
        ([1, 4, 1], [True, False, False], [2, 1]),  # a beam group stays, one row moves
        ([2, 1, 1, 2], [False, True, False, False], [0, 2, 3]),  # no exact fit: stable order
    ],
)
def test_leaving_groups_are_replaced_by_groups_from_the_end(sizes, leaving, order):
    assert compaction_order(sizes, leaving) == order
