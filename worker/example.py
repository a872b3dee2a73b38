"""The example app's work: what happens when someone presses the button on the web page.

A message is an "application" (any text, JSON welcome). Handling it takes a moment, in a
few reported steps, and its result says who was accepted; an application whose JSON says
``"fail": true`` fails, to show retries and the dead-letter queue.
"""

from __future__ import annotations

import asyncio
import json

from .job import Job

STEPS = 4
STEP_SECONDS = 0.25


async def handle(job: Job) -> dict[str, object]:
    try:
        data = json.loads(job.body)
    except ValueError:
        data = None
    for step in range(1, STEPS + 1):
        await asyncio.sleep(STEP_SECONDS)
        job.progress(step / STEPS)
    if isinstance(data, dict) and data.get("fail"):
        raise RuntimeError("the application asked to fail")
    # Kept with "done" (RESULT_MAX_BYTES): the page shows it, get_status returns it.
    applicant = data.get("applicant") if isinstance(data, dict) else None
    name = applicant[:100] if isinstance(applicant, str) else None
    return {"accepted": True, "applicant": name, "steps": STEPS}
