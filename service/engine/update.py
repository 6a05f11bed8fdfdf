"""The update stage of a step: from the tokens the runner chose to each request's StepEvent.

Every stop decision is made here and only here (vLLM's `update_from_output`): a sampled or
greedy row stops at an end-of-sequence token or at its maximum length; a beam request stops when
its search says so and answers with its best hypothesis. The caller releases what finished.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.engine.runner import RunnerOutput
from service.engine.sequence import SequenceGroup, StepEvent


@dataclass
class StepUpdate:
    events: list[tuple[SequenceGroup, StepEvent]]  # one per request that has news
    finished: list[SequenceGroup]  # requests that ended at this step: their rows leave


def update_requests(output: RunnerOutput, eos_ids: np.ndarray) -> StepUpdate:
    """Each request's new tokens and, where it ended, why (requests that failed at this step
    have their own event)."""
    ended = np.isin(output.tokens, eos_ids)
    update = StepUpdate(events=[], finished=[])
    failed = {group for group, _ in output.failed}
    row = 0
    for group in output.requests:
        event = None
        if output.forced[row] or group in failed:
            pass  # a prompt token was fed (nothing to tell, nothing to stop), or it failed
        elif group.beam is None:
            event = _next_token(group, output, row, bool(ended[row]))
        elif group in output.beams_done:
            event = _beam_answer(group, eos_ids)
        if event is not None:
            update.events.append((group, event))
            if event.finish_reason:
                update.finished.append(group)
        row += group.rows
    return update


def _next_token(group: SequenceGroup, output: RunnerOutput, row: int, ended: bool) -> StepEvent:
    token = int(output.tokens[row])
    group.generated.append(token)
    reason = None
    if ended:
        reason = "eos"
    elif output.lengths[row] >= group.params.max_length:
        reason = "length"
    attention = group.own_attention(output.attention, slice(row, row + 1))
    return StepEvent(tokens=[token], finish_reason=reason, attention=attention)


def _beam_answer(group: SequenceGroup, eos_ids: np.ndarray) -> StepEvent:
    assert group.beam is not None
    hypothesis = group.beam.best()[group.params.prompt_len :].tolist()
    group.generated = hypothesis
    ended = bool(hypothesis) and hypothesis[-1] in eos_ids
    return StepEvent(
        tokens=hypothesis,
        finish_reason="eos" if ended else "length",
        attention=group.beam.best_attention(),
    )
