"""Sends off the tasks' critical path: the progress artifact a person watches in the UI."""

from __future__ import annotations

import asyncio
import uuid

from prefect import flow
from prefect.artifacts import acreate_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from aca_flows.flows import publishing
from aca_flows.flows.publishing import ProgressArtifact


def test_tasks_ending_close_together_make_one_update_and_the_last_counts_always_arrive(monkeypatch):
    sent = []
    update = publishing.aupdate_progress_artifact

    async def counted(artifact_id, **fields):
        sent.append(fields["description"])
        return await update(artifact_id, **fields)

    monkeypatch.setattr(publishing, "aupdate_progress_artifact", counted)
    key = f"aca-progress-{uuid.uuid4().hex[:8]}"

    @flow
    async def five_tasks_end() -> str:
        # An interval no run would wait out: only the flush can send what is waiting.
        progress = ProgressArtifact(
            acreate_progress_artifact(progress=0.0, key=key, description="start"), interval=3600
        )
        for done in range(1, 6):
            progress.update({"completed": done, "pending": 5 - done})
            await asyncio.sleep(0.2)  # each task ends after the last update was sent
        await progress.flush()
        return str(await progress.artifact_id())

    artifact_id = asyncio.run(five_tasks_end())

    async def read():
        async with get_client() as client:  # by key: the suite's server holds many artifacts
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )

    (artifact,) = [a for a in asyncio.run(read()) if str(a.id) == artifact_id]
    assert artifact.data == 100.0
    assert artifact.description == "Tasks completed: 5 completed of 5"
    assert sent[0] == "Tasks completed: 1 completed, 4 pending of 5"
    assert sent[-1] == "Tasks completed: 5 completed of 5"
    assert len(sent) == 2
